"""A course kit: each equation's code becomes an exercise, and the equation tests grade it.

    python -m clip_min.exercises list                      # the exercises, in teaching order
    python -m clip_min.exercises make DIR [--only NAMES]   # a student copy with their bodies blanked
    python -m clip_min.exercises check [NAMES]             # inside a copy: a scoreboard of the tests
    python -m clip_min.exercises mistakes [--only NAMES]   # the teacher's: each wrong answer must be caught

In the copy, each listed function keeps its decorators, signature and docstring; the rest of its
body becomes ``raise NotImplementedError("Exercise N: write ...; see docs/...")``, and no other
line of a copied file changes. The copy leaves out every file from which a body could be read
back (``blank.py`` says which it takes). ``check`` runs the exercises' tests (the equation tests
of tests/, and a training run where training depends on the exercise) and reports each exercise
as passed, failing (with the first failing assertion), not started, or waiting on the exercise
its failures come from (``grade.py``).

:data:`EXERCISES` below is the only place that says which functions and tests make up an
exercise. Functions are named by file and qualified name and found by parsing the file, so when
code moves, this table is the one thing to update; tests/test_exercises.py fails until it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The repository this package sits in: the one make copies and check grades.
REPOSITORY = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Exercise:
    """One exercise: the functions a student writes and the tests that say when they are right."""

    name: str  # what --only and check take (the number works too)
    title: str  # what the student writes, in a few words
    docs: str  # the docs page that teaches it and ends with its exercise section
    functions: tuple[tuple[str, str], ...]  # (file, qualified name) whose bodies are blanked
    tests: tuple[str, ...]  # pytest node ids of the test functions that grade it
    # Lines of its bodies that other code of a student copy holds as well (a shared input check),
    # so the copy cannot keep them back; every other line of a body must appear nowhere in it.
    shared: tuple[str, ...] = ()


EXERCISES = (
    Exercise(
        "attention", "quick GELU and attention", "docs/01-clip-and-the-score.md",
        (("clip_min/model.py", "quick_gelu"), ("clip_min/model.py", "MultiheadAttention.forward")),
        ("tests/test_model.py::test_attention_block_matches_float64_math",
         "tests/test_model.py::test_attention_adds_the_in_proj_adapter"),
    ),
    Exercise(
        "text-tower", "the end-of-text pooling and the score C", "docs/01-clip-and-the-score.md",
        (("clip_min/model.py", "CLIP.project_text"), ("clip_min/losses.py", "score")),
        ("tests/test_model.py::test_text_features_match_float64_math",
         "tests/test_model.py::test_cutting_padding_is_exact_per_text",
         "tests/test_model.py::test_sorted_halves_equal_one_run_with_gradients",
         "tests/test_losses.py::test_score_is_exp_logit_scale_times_cosine"),
    ),
    Exercise(
        "lora", "LoRA's branch, merge and unmerge", "docs/02-lora.md",
        (("clip_min/lora.py", "LoRABranch.forward"), ("clip_min/lora.py", "LoRABranch.delta_weight"),
         ("clip_min/lora.py", "LoRALinear.merge"), ("clip_min/lora.py", "LoRALinear.unmerge"),
         ("clip_min/lora.py", "InProjLoRA.merge"), ("clip_min/lora.py", "InProjLoRA.unmerge")),
        ("tests/test_lora.py::test_zero_B_is_the_frozen_layer_exactly",
         "tests/test_lora.py::test_lora_linear_matches_float64_equation",
         "tests/test_lora.py::test_dropout_acts_on_the_branch_only",
         "tests/test_lora.py::test_dropout_acts_on_the_branch_input",
         "tests/test_lora.py::test_fused_in_proj_matches_float64_attention",
         "tests/test_lora.py::test_zero_B_leaves_the_model_unchanged",
         "tests/test_lora.py::test_gradients_reach_every_adapter",
         "tests/test_lora.py::test_merged_forward_equals_unmerged_forward",
         "tests/test_lora.py::test_merge_is_idempotent_and_unmerge_restores_W",
         "tests/test_learning.py::test_lora_with_eq1_teaches_a_tiny_clip_to_prefer_descriptions"),
        shared=("self.merged = False", "if self.merged:"),  # set in __init__; read in InProjLoRA.forward
    ),
    Exercise(
        "eq1", "the behavioral objective (Eq. 1)", "docs/03-behavioral-objective.md",
        (("clip_min/losses.py", "_two_way_ce"), ("clip_min/losses.py", "behavioral_loss")),
        ("tests/test_losses.py::test_eq1_behavioral_loss_prefers_the_description",
         "tests/test_learning.py::test_lora_with_eq1_teaches_a_tiny_clip_to_prefer_descriptions"),
    ),
    Exercise(
        "interchange", "Eq. 4 at one site: the interchange", "docs/04-interventions-and-dii.md",
        (("clip_min/intervention.py", "interchange"),),
        ("tests/test_intervention.py::test_eq4_interchange_k0_is_the_base_exactly",
         "tests/test_intervention.py::test_eq4_interchange_equals_rotate_swap_unrotate",
         "tests/test_intervention.py::test_eq4_identity_rotation_swaps_only_the_first_k_coordinates"),
    ),
    Exercise(
        "dii", "Eq. 4 in the model: the DII", "docs/04-interventions-and-dii.md",
        (("clip_min/intervention.py", "dii"),),
        ("tests/test_intervention.py::test_eq4_dii_k0_is_the_base_run",
         "tests/test_intervention.py::test_eq4_dii_k_width_puts_the_source_state_at_the_site",
         "tests/test_intervention.py::test_eq4_identity_rotation_changes_only_the_first_k_coordinates_in_the_model",
         "tests/test_intervention.py::test_eq4_dii_matches_a_naive_hooked_rerun"),
        # The first lines of every function of intervention.py that runs the model.
        shared=("_check(model, rotation, base_tokens, source_tokens, layer, k)", "n = base_tokens.shape[0]",
                "h, eot = _run_to_site(model, torch.cat([base_tokens, source_tokens]), layer)",
                "site = _at_end_token(h, eot)"),
    ),
    Exercise(
        "rotation", "the rotation rho and its inverse", "docs/05-rotation.md",
        (("clip_min/rotation.py", "Rotation.rotate"), ("clip_min/rotation.py", "Rotation.unrotate")),
        ("tests/test_rotation.py::test_gradients_reach_the_rotation",
         "tests/test_rotation.py::test_unrotate_inverts_rotate"),
    ),
    Exercise(
        "eq2-3", "the IIT objectives (Eqs. 2 and 3)", "docs/06-iit-objectives.md",
        (("clip_min/losses.py", "iit_loss_caption_base"), ("clip_min/losses.py", "iit_loss_description_base"),
         ("clip_min/losses.py", "iit_loss")),
        ("tests/test_losses.py::test_eq2_caption_base_prefers_the_intervened_run",
         "tests/test_losses.py::test_eq3_description_base_prefers_the_plain_description",
         "tests/test_losses.py::test_eq2_eq3_iit_loss_is_their_mean",
         "tests/test_intervention.py::test_eq4_gradients_reach_lora_and_the_rotation"),
    ),
    Exercise(
        "eq5", "the joint objective (Eq. 5)", "docs/07-joint-objective.md",
        (("clip_min/losses.py", "joint_loss"),),
        ("tests/test_losses.py::test_eq5_joint_loss",
         "tests/test_losses.py::test_eq5_joint_loss_rejects_a_outside_0_1"),
    ),
    Exercise(
        "eq6", "integrated gradients by the trapezoid rule (Eq. 6)", "docs/08-integrated-gradients.md",
        (("clip_min/attribution.py", "trapezoid"), ("clip_min/attribution.py", "_integrate")),
        ("tests/test_attribution.py::test_eq6_completeness",
         "tests/test_attribution.py::test_eq6_matches_a_hand_computed_three_point_rule",
         "tests/test_attribution.py::test_eq6_baseline_score_is_the_empty_text"),
        shared=("with torch.no_grad():",),
    ),
    Exercise(
        "eq7", "the mediated gradient (Eq. 7)", "docs/08-integrated-gradients.md",
        (("clip_min/attribution.py", "route_gradient"),),
        ("tests/test_attribution.py::test_eq7_mediated_is_zero_when_the_site_is_cut",
         "tests/test_attribution.py::test_eq7_mediated_plus_around_is_total",
         "tests/test_attribution.py::test_eq7_mediated_gradient_is_the_projection_onto_the_first_k_columns_of_R",
         "tests/test_attribution.py::test_eq7_the_whole_last_block_end_state_mediates_everything",
         "tests/test_attribution.py::test_eq7_the_authors_complement_is_the_end_state_outside_H_and_nothing_else"),
    ),
    Exercise(
        "trade-off", "recovery, transfer score and the trade-off (Appendix C)", "docs/09-evaluation.md",
        (("clip_min/metrics.py", "recovery"), ("clip_min/metrics.py", "transfer_score"),
         ("clip_min/metrics.py", "trade_off")),
        ("tests/test_selection.py::test_recovery_transfer_score_and_trade_off_by_hand",
         "tests/test_selection.py::test_transfer_score_is_the_mean_recovery_over_three_tasks",
         "tests/test_selection.py::test_best_step_follows_a"),
    ),
)


class ExerciseError(ValueError):
    """A request the kit cannot carry out; the message says what to do instead."""


def number(exercise: Exercise) -> int:
    """The exercise's number, 1-based, in teaching order."""
    return EXERCISES.index(exercise) + 1


def select(names: list[str] | None) -> list[Exercise]:
    """The exercises named (by name or number), in teaching order; all of them for None."""
    if not names:
        return list(EXERCISES)
    by_key = {e.name: e for e in EXERCISES} | {str(number(e)): e for e in EXERCISES}
    unknown = [n for n in names if n not in by_key]
    if unknown:
        raise ExerciseError(f"no exercise {', '.join(map(repr, unknown))}; "
                            f"choose from {', '.join(e.name for e in EXERCISES)} (or their numbers 1-{len(EXERCISES)})")
    chosen = {by_key[n] for n in names}
    return [e for e in EXERCISES if e in chosen]


def message(exercise: Exercise, qualname: str) -> str:
    """What a blanked function raises: which exercise it is and where it is taught."""
    return f"Exercise {number(exercise)}: write {qualname}; see {exercise.docs}, Exercise {number(exercise)}"
