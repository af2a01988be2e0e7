"""A catalogue of wrong answers: slips a student or a researcher makes, each of which the tests must catch.

    python -m clip_min.exercises mistakes                 # every entry, one at a time
    python -m clip_min.exercises mistakes --only NAME ... # some of them
    python -m clip_min.exercises mistakes --table         # the catalogue as the teacher's markdown table

Each :class:`Mistake` is one small edit of one file (an exact text, found exactly once, and what
replaces it) with one line saying what the person did, and the tests that should fail for it.
``mistakes`` copies the whole repository to a temporary folder, and for each entry applies its
edit there, runs its tests with pytest and puts the file back. An entry is *caught* when a test fails, *missed* when they all pass, and *broken* when the
edit does not apply or pytest could not run the tests (a node id that is gone, say).

Running pytest once per entry would spend most of its time importing torch. So one process
imports the heavy libraries once and forks a child per entry, which imports the copy's clip_min
afresh, runs pytest in the copy and exits; where there is no fork, each entry gets a fresh
``python -m pytest``.

The catalogue quotes the right text of every blanked body, so it is the teacher's: ``make``
leaves this file out of a student copy, and ``mistakes`` there says so and stops.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .blank import copy_repository

TIME_LIMIT_S = 300  # one entry's tests; they take a few seconds


@dataclass(frozen=True)
class Mistake:
    """One wrong answer: replace ``old`` (found exactly once in ``file``) by ``new``."""

    name: str  # what --only takes
    file: str
    old: str
    new: str
    what: str  # what the person did, in one line
    tests: tuple[str, ...]  # pytest node ids, at least one of which must fail


def slip(name: str, file: str, old: str, new: str, what: str, *tests: str) -> Mistake:
    return Mistake(name, file, old, new, what, tests)


T_MODEL = "tests/test_model.py::"
T_LORA = "tests/test_lora.py::"
T_LOSSES = "tests/test_losses.py::"
T_INTER = "tests/test_intervention.py::"
T_ROT = "tests/test_rotation.py::"
T_ATTR = "tests/test_attribution.py::"
T_SEL = "tests/test_selection.py::"
T_EVAL = "tests/test_evaluate.py::"
T_IMG = "tests/test_images.py::"
T_TOK = "tests/test_tokenizer.py::"
T_W = "tests/test_weights.py::"
T_PROTO = "tests/test_protocol.py::"
T_CKPT = "tests/test_checkpoint.py::"

BLOCK = T_MODEL + "test_attention_block_matches_float64_math"
TEXT = T_MODEL + "test_text_features_match_float64_math"
FORWARD = T_MODEL + "test_forward_gives_openai_logits_images_by_texts"
HF_SMALL = T_W + "test_hf_heads_come_from_config_json"
OPENAI_SMALL = T_W + "test_small_config_is_read_off_the_weights"
ONE_WAY = T_INTER + "test_one_way_rows_in_the_training_step_match_hooks_and_float64_with_gradients_through_the_source"
TIE = T_PROTO + "test_training_and_table_1_select_the_earliest_of_a_tie_and_never_step_0"
RESUME_EVAL_EVERY = T_CKPT + "test_a_resume_that_changes_eval_every_selects_among_the_evaluations_it_logged"
DROPOUT_EVAL = T_PROTO + "test_evaluation_with_lora_dropout_runs_in_eval_mode_and_training_goes_on_in_train_mode"
SIXTEEN_BIT = T_IMG + "test_16_bit_pixels_scale_by_255_over_65535_and_round"
FLOAT_PIXELS = T_IMG + "test_float_pixels_scale_by_255_and_round_clipping_outside_0_to_1"

MISTAKES = (
    # ---- the model (docs/01) ----
    slip("silu-for-quick-gelu", "clip_min/model.py", "return x * torch.sigmoid(1.702 * x)", "return x * torch.sigmoid(x)",
      "wrote GELU's approximation without CLIP's 1.702 (that is SiLU)", BLOCK),
    slip("exact-gelu", "clip_min/model.py", "return x * torch.sigmoid(1.702 * x)", "return F.gelu(x)",
      "used the exact GELU, which CLIP was not trained with", BLOCK),
    slip("k-q-v-order", "clip_min/model.py", "q, k, v = qkv.view(", "k, q, v = qkv.view(",
      "unpacked the fused projection as k, q, v", BLOCK),
    slip("per-head-qkv-layout", "clip_min/model.py",
      "qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)",
      "qkv.view(batch, length, self.heads, 3, width // self.heads).permute(3, 0, 2, 1, 4)",
      "read the fused q/k/v as interleaved per head, not as [W_q; W_k; W_v]", BLOCK),
    slip("no-causal-mask", "clip_min/model.py", "is_causal=causal)", "is_causal=False)",
      "let every text token attend to the tokens after it", BLOCK, TEXT),
    slip("heads-merged-without-transpose", "clip_min/model.py", "out = out.transpose(1, 2).reshape(batch, length, width)",
      "out = out.reshape(batch, length, width)", "merged the heads back without moving the head axis next to the features", BLOCK),
    slip("post-layernorm-block", "clip_min/model.py", "x = x + self.attn(self.ln_1(x), causal)",
      "x = self.ln_1(x + self.attn(x, causal))", "normalised after the residual sum (post-LN, as in BERT), not before", BLOCK),
    slip("mlp-without-activation", "clip_min/model.py", "return self.c_proj(quick_gelu(self.c_fc(x)))",
      "return self.c_proj(self.c_fc(x))", "left the activation out of the MLP", BLOCK),
    slip("attention-ignores-the-adapter", "clip_min/model.py",
      "        if self.in_proj_lora is not None:\n            qkv = qkv + self.in_proj_lora(x)\n", "",
      "left out the hook that adds in_proj_lora's update, so LoRA on attention never acts",
      T_MODEL + "test_attention_adds_the_in_proj_adapter"),
    slip("layernorm-eps-1e-6", "clip_min/model.py", "self.ln_1 = LayerNorm(width)", "self.ln_1 = LayerNorm(width, eps=1e-6)",
      "gave LayerNorm timm's eps of 1e-6 instead of torch's 1e-5, which OpenAI uses", BLOCK),
    slip("pool-last-position", "clip_min/model.py", "x = x[torch.arange(x.shape[0], device=x.device), eot]  # (B, text_width)",
      "x = x[:, -1]  # (B, text_width)", "pooled the last position of the batch, not each text's end token", TEXT),
    slip("eot-by-counting-non-zero-ids", "clip_min/model.py", "eot = tokens.argmax(dim=-1)  # the end-of-text",
      "eot = (tokens != 0).sum(dim=-1) - 1  # the end-of-text",
      "found the end token by counting non-zero ids, which an id 0 ('!') inside a text throws off", TEXT),
    slip("eot-before-first-padding", "clip_min/model.py", "eot = tokens.argmax(dim=-1)  # the end-of-text",
      "eot = tokens.argmin(dim=-1) - 1  # the end-of-text",
      "took the end token to be just before the first 0, which an id 0 inside a text throws off", TEXT),
    slip("no-positional-embedding", "clip_min/model.py",
      "x = self.token_embedding(tokens[:, :length]) + self.positional_embedding[:length]",
      "x = self.token_embedding(tokens[:, :length])", "forgot the text's positional embedding", TEXT),
    slip("sorted-parts-wrong-inverse", "clip_min/sorted_parts.py", "inverse = order.argsort()", "inverse = order",
      "put the length-sorted parts back with the sorting order instead of its inverse",
      T_MODEL + "test_sorted_halves_equal_one_run_with_gradients",
      "tests/test_sorted_parts.py::test_the_step_in_sorted_parts_has_the_loss_and_gradients_of_one_pass"),
    slip("image-mean-pooling", "clip_min/model.py", "return self.ln_post(x[:, 0]) @ self.proj",
      "return self.ln_post(x.mean(dim=1)) @ self.proj", "pooled the image by the mean of its tokens, not the class token", FORWARD),
    slip("no-ln-pre", "clip_min/model.py", "x = self.transformer(self.ln_pre(x))", "x = self.transformer(x)",
      "left out the vision tower's ln_pre", FORWARD),
    slip("causal-vision-tower", "clip_min/model.py", "x = self.transformer(self.ln_pre(x))",
      "x = self.transformer(self.ln_pre(x), causal=True)", "gave the image patches the text's causal mask", FORWARD),
    slip("logit-scale-not-exponentiated", "clip_min/model.py", "logits = self.logit_scale.exp() * image @ text.T",
      "logits = self.logit_scale * image @ text.T", "multiplied by t where CLIP multiplies by e^t", FORWARD),
    slip("logits-texts-by-images", "clip_min/model.py", "return logits, logits.T", "return logits.T, logits",
      "returned the logits texts x images first", FORWARD),
    slip("logits-not-normalised", "clip_min/model.py", "image = F.normalize(self.encode_image(pixels), dim=-1)",
      "image = self.encode_image(pixels)", "took dot products of unnormalised image features", FORWARD),
    # ---- the score and the objectives (docs/01, 03, 06, 07) ----
    slip("score-dot-product", "clip_min/losses.py",
      "return logit_scale.exp() * F.cosine_similarity(image_features, text_features, dim=-1)",
      "return logit_scale.exp() * (image_features * text_features).sum(-1)",
      "scored with a dot product of unnormalised features, not the cosine",
      T_LOSSES + "test_score_is_exp_logit_scale_times_cosine"),
    slip("score-without-exp", "clip_min/losses.py",
      "return logit_scale.exp() * F.cosine_similarity(image_features, text_features, dim=-1)",
      "return logit_scale * F.cosine_similarity(image_features, text_features, dim=-1)",
      "scaled the cosine by t instead of e^t", T_LOSSES + "test_score_is_exp_logit_scale_times_cosine"),
    slip("clipscore-unclipped", "clip_min/losses.py", "dim=-1).clamp(min=0)", "dim=-1)",
      "let CLIPScore go negative (Hessel et al. clip it at 0)", T_LOSSES + "test_clipscore_is_2_5_times_clipped_cosine"),
    slip("eq1-caption-wins", "clip_min/losses.py", "return _two_way_ce(c_cap, c_des, target=1)",
      "return _two_way_ce(c_cap, c_des, target=0)", "gave Eq. 1 the target [1, 0]: the caption should win",
      T_LOSSES + "test_eq1_behavioral_loss_prefers_the_description"),
    slip("eq1-summed-over-the-batch", "clip_min/losses.py", "return F.cross_entropy(logits, labels)\n",
      "return F.cross_entropy(logits, labels, reduction=\"sum\")\n", "summed the cross-entropy over the batch instead of averaging",
      T_LOSSES + "test_eq1_behavioral_loss_prefers_the_description"),
    slip("two-way-ce-columns-swapped", "clip_min/losses.py", "logits = torch.stack([first, second], dim=1)",
      "logits = torch.stack([second, first], dim=1)", "stacked the two scores in the other order",
      T_LOSSES + "test_eq1_behavioral_loss_prefers_the_description"),
    slip("eq2-plain-caption-wins", "clip_min/losses.py", "return _two_way_ce(c_cap, c_cap_with_des, target=1)",
      "return _two_way_ce(c_cap, c_cap_with_des, target=0)", "asked Eq. 2 for the plain caption to win over the intervened run",
      T_LOSSES + "test_eq2_caption_base_prefers_the_intervened_run"),
    slip("eq3-intervened-wins", "clip_min/losses.py", "return _two_way_ce(c_des, c_des_with_cap, target=0)",
      "return _two_way_ce(c_des, c_des_with_cap, target=1)", "asked Eq. 3 for the intervened description to win",
      T_LOSSES + "test_eq3_description_base_prefers_the_plain_description"),
    slip("iit-loss-summed", "clip_min/losses.py", "c_des_with_cap=c_des_with_cap)) / 2", "c_des_with_cap=c_des_with_cap))",
      "added Eqs. 2 and 3 instead of averaging them", T_LOSSES + "test_eq2_eq3_iit_loss_is_their_mean"),
    slip("eq5-weights-swapped", "clip_min/losses.py", "return a * l_iit + (1 - a) * l_behavioral",
      "return a * l_behavioral + (1 - a) * l_iit", "put a on the behavioral loss in Eq. 5", T_LOSSES + "test_eq5_joint_loss"),
    slip("eq5-open-interval", "clip_min/losses.py", "if not 0.0 <= a <= 1.0:", "if not 0.0 < a < 1.0:",
      "refused a = 0 and a = 1, the two single objectives", T_LOSSES + "test_eq5_joint_loss"),
    slip("contrastive-one-direction", "clip_min/losses.py",
      "return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2",
      "return F.cross_entropy(logits, labels)", "kept only the image-to-text half of CLIP's loss",
      T_LOSSES + "test_contrastive_loss_matches_float64_infonce"),
    # ---- LoRA (docs/02) ----
    slip("lora-dropout-on-the-output", "clip_min/lora.py",
      "return F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B) * self.scaling",
      "return self.lora_dropout(F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling)",
      "dropped the branch's output, where loralib and peft drop its input",
      T_LORA + "test_dropout_acts_on_the_branch_input"),
    slip("lora-dropout-between-A-and-B", "clip_min/lora.py",
      "return F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B) * self.scaling",
      "return F.linear(self.lora_dropout(F.linear(x, self.lora_A)), self.lora_B) * self.scaling",
      "dropped A x, between the two factors, instead of x", T_LORA + "test_dropout_acts_on_the_branch_input"),
    slip("lora-dropout-on-the-frozen-path", "clip_min/lora.py", "y = F.linear(x, self.weight, self.bias)",
      "y = F.linear(self.lora.lora_dropout(x), self.weight, self.bias)", "dropped the frozen layer's input too",
      T_LORA + "test_dropout_acts_on_the_branch_only"),
    slip("lora-scaling-r-over-alpha", "clip_min/lora.py",
      "return (self.rank if self.alpha is None else self.alpha) / self.rank",
      "return self.rank / (self.rank if self.alpha is None else self.alpha)", "scaled by r / alpha instead of alpha / r",
      T_LORA + "test_lora_linear_matches_float64_equation"),
    slip("lora-B-random-at-init", "clip_min/lora.py", "self.lora_B = nn.Parameter(torch.zeros(out_features, config.rank, **factory))",
      "self.lora_B = nn.Parameter(torch.randn(out_features, config.rank, **factory))",
      "drew B at random, so step 0 is no longer the pretrained model", T_LORA + "test_zero_B_is_the_frozen_layer_exactly"),
    slip("delta-weight-transposed", "clip_min/lora.py", "return (self.lora_B @ self.lora_A) * self.scaling",
      "return (self.lora_A.T @ self.lora_B.T) * self.scaling", "wrote Delta W as (B A)^T, which a square weight accepts",
      T_LORA + "test_merged_forward_equals_unmerged_forward"),
    slip("delta-weight-unscaled", "clip_min/lora.py", "return (self.lora_B @ self.lora_A) * self.scaling",
      "return self.lora_B @ self.lora_A", "merged B A without alpha / r", T_LORA + "test_merged_forward_equals_unmerged_forward"),
    slip("merge-forgets-it-merged", "clip_min/lora.py",
      "self.weight += self.lora.delta_weight().to(self.weight.dtype)\n            self.merged = True",
      "self.weight += self.lora.delta_weight().to(self.weight.dtype)",
      "merged without noting it, so the branch is added twice and merge is not idempotent",
      T_LORA + "test_merged_forward_equals_unmerged_forward", T_LORA + "test_merge_is_idempotent_and_unmerge_restores_W"),
    slip("merged-layer-still-adds-the-branch", "clip_min/lora.py", "return y if self.merged else y + self.lora(x)",
      "return y + self.lora(x)", "kept adding the branch after merging it into W", T_LORA + "test_merged_forward_equals_unmerged_forward"),
    slip("unmerge-adds", "clip_min/lora.py", "in_proj_weight[rows] -= getattr(self, s)", "in_proj_weight[rows] += getattr(self, s)",
      "unmerged q/k/v by adding B A again", T_LORA + "test_merge_is_idempotent_and_unmerge_restores_W"),
    slip("qv-adapts-q-and-k", "clip_min/lora.py", 'slices = ("q", "v") if targets == "qv" else InProjLoRA.SLICES',
      'slices = ("q", "k") if targets == "qv" else InProjLoRA.SLICES', "adapted q and k for targets 'qv'",
      T_LORA + "test_fused_in_proj_matches_float64_attention"),
    slip("lora-frozen-weights-train", "clip_min/lora.py", "    model.requires_grad_(False)\n", "",
      "forgot to freeze the pretrained weights", T_LORA + "test_only_lora_parameters_require_grad_and_frozen_keys_keep_their_names"),
    slip("qv-merge-rows-by-adapted-slice", "clip_min/lora.py", "i = self.SLICES.index(s)", "i = self.slices.index(s)",
      "placed a slice's rows by its place among the adapted slices, so with targets 'qv' v's update lands in k's rows",
      T_LORA + "test_merged_forward_equals_unmerged_forward[qv-text]",
      T_LORA + "test_merging_q_and_v_adds_to_their_thirds_of_the_fused_weight_and_leaves_k_alone"),
    # ---- the rotation and Eq. 4 (docs/04, 05) ----
    slip("orthogonal-map-ignored", "clip_min/rotation.py", 'parametrizations.orthogonal(self, "weight", orthogonal_map=orthogonal_map)',
      'parametrizations.orthogonal(self, "weight")', "checked --orthogonal-map but never passed it on to torch",
      T_ROT + "test_R_follows_the_orthogonal_map_named"),
    slip("rotation-not-parametrized", "clip_min/rotation.py",
      '        parametrizations.orthogonal(self, "weight", orthogonal_map=orthogonal_map)\n', "",
      "made R a plain parameter, orthogonal only until the first optimizer step",
      T_ROT + "test_orthogonal_after_200_adam_steps"),
    slip("unrotate-by-R", "clip_min/rotation.py", "return y @ self.R.T", "return y @ self.R",
      "undid the rotation with R instead of R^T", T_ROT + "test_unrotate_inverts_rotate"),
    slip("rotate-by-R-transposed", "clip_min/rotation.py", "return x @ self.R\n", "return x @ self.R.T\n",
      "rotated row vectors by R^T (the column-vector habit)", T_ROT + "test_unrotate_inverts_rotate"),
    slip("interchange-rows-of-R", "clip_min/intervention.py", "R_k = R[:, :k]", "R_k = R[:k].T",
      "took R's first k rows for the subspace, not its first k columns",
      T_INTER + "test_eq4_interchange_equals_rotate_swap_unrotate"),
    slip("interchange-last-k", "clip_min/intervention.py", "R_k = R[:, :k]", "R_k = R[:, R.shape[1] - k :]",
      "swapped the last k rotated coordinates instead of the first k",
      T_INTER + "test_eq4_interchange_equals_rotate_swap_unrotate"),
    slip("interchange-keeps-the-source", "clip_min/intervention.py", "return h_base + ((h_source - h_base) @ R_k) @ R_k.T",
      "return h_source + ((h_base - h_source) @ R_k) @ R_k.T", "kept the source's state and took the base's subspace",
      T_INTER + "test_eq4_interchange_k0_is_the_base_exactly"),
    slip("dii-base-and-source-swapped", "clip_min/intervention.py", "patched = interchange(site[:n], site[n:], rotation.R, k)",
      "patched = interchange(site[n:], site[:n], rotation.R, k)", "patched the source with the base's values",
      T_INTER + "test_eq4_dii_k0_is_the_base_run"),
    slip("dii-site-is-the-blocks-input", "clip_min/intervention.py", "return model.transformer(x, causal=True, start=0, stop=layer + 1), eot",
      "return model.transformer(x, causal=True, start=0, stop=layer), eot", "intervened on block layer's input, not its output",
      T_INTER + "test_eq4_dii_matches_a_naive_hooked_rerun"),
    slip("dii-reruns-the-site-block", "clip_min/intervention.py", "model.transformer(h, causal=True, start=layer + 1)",
      "model.transformer(h, causal=True, start=layer)", "continued from block layer again after patching its output",
      T_INTER + "test_eq4_dii_matches_a_naive_hooked_rerun"),
    slip("one-way-source-detached", "clip_min/intervention.py",
      "patched = _replace_at_end_token(h[:n], eot[:n], interchange(site[:n], site[n:], rotation.R, k))",
      "patched = _replace_at_end_token(h[:n], eot[:n], interchange(site[:n], site[n:].detach(), rotation.R, k))",
      "cut the gradient at the source's state in the one-way rows, where the authors' code lets it flow through the source's run",
      ONE_WAY),
    slip("one-way-patches-the-source", "clip_min/intervention.py",
      "patched = _replace_at_end_token(h[:n], eot[:n], interchange(site[:n], site[n:], rotation.R, k))",
      "patched = _replace_at_end_token(h[:n], eot[:n], interchange(site[n:], site[:n], rotation.R, k))",
      "gave each one-way row's base the source's state with the base's subspace, not the other way round",
      T_INTER + "test_eq4_one_way_features_are_base_source_and_the_patched_base", ONE_WAY),
    slip("one-way-base-and-source-swapped", "clip_min/train/loop.py",
      "base, source = torch.where(pick, captions, descriptions), torch.where(pick, descriptions, captions)",
      "base, source = torch.where(pick, descriptions, captions), torch.where(pick, captions, descriptions)",
      "took the description as the base of a row whose caption_base is True", ONE_WAY),
    slip("one-way-joint-texts-swapped", "clip_min/train/loop.py",
      "c_cap, c_des = torch.where(caption_base, c_base, c_source), torch.where(caption_base, c_source, c_base)",
      "c_cap, c_des = torch.where(caption_base, c_source, c_base), torch.where(caption_base, c_base, c_source)",
      "scored a caption-base row's source as its caption in the joint loss's behavioral term", ONE_WAY + "[joint]"),
    # ---- Eqs. 6 and 7 (docs/08) ----
    slip("trapezoid-ends-not-halved", "clip_min/attribution.py", "    weights[[0, -1]] /= 2\n", "",
      "gave the path's two ends full weight in the trapezoid rule", T_ATTR + "test_eq6_matches_a_hand_computed_three_point_rule"),
    slip("riemann-weights", "clip_min/attribution.py", "weights = torch.full((steps,), 1 / (steps - 1), dtype=torch.float64)",
      "weights = torch.full((steps,), 1 / steps, dtype=torch.float64)",
      "weighted every point 1 / steps (a Riemann sum) and then halved the ends",
      T_ATTR + "test_eq6_matches_a_hand_computed_three_point_rule"),
    slip("baseline-zeroes-start-and-end", "clip_min/attribution.py", "keep[[0, eot]] = 1", "keep[[0, eot]] = 0",
      "made the baseline all zeros, start and end tokens too", T_ATTR + "test_eq6_baseline_score_is_the_empty_text"),
    slip("ig-without-input-difference", "clip_min/attribution.py", "((x - x_prime).double() * gradient_sum).sum(-1)",
      "(x.double() * gradient_sum).sum(-1)", "multiplied the averaged gradient by x instead of x - x'",
      T_ATTR + "test_eq6_matches_a_hand_computed_three_point_rule"),
    slip("eq7-rows-of-R", "clip_min/attribution.py", "R_k = site.R[:, site.start : site.start + site.k].to(h.dtype)",
      "R_k = site.R[site.start : site.start + site.k].T.to(h.dtype)",
      "projected Eq. 7's gradient onto R's first k rows, not its first k columns",
      T_ATTR + "test_eq7_mediated_gradient_is_the_projection_onto_the_first_k_columns_of_R"),
    slip("eq7-other-positions-not-detached", "clip_min/attribution.py",
      'return h.detach().index_put((rows, eot), h_eot.detach() + through_H)', 'return h.index_put((rows, eot), h_eot.detach() + through_H)',
      "let the gradient through every other position of the site's block as if it passed through H",
      T_ATTR + "test_eq7_mediated_gradient_is_the_projection_onto_the_first_k_columns_of_R"),
    slip("eq7-around-keeps-H", "clip_min/attribution.py", "return h.index_put((rows, eot), h_eot - through_H)",
      "return h.index_put((rows, eot), h_eot)", "routed 'around' through everything, H included",
      T_ATTR + "test_eq7_mediated_plus_around_is_total"),
    slip("eos-baseline-filled-with-bos", "clip_min/attribution.py",
      "filler = x[eot] if baseline == \"eos\" else torch.zeros_like(x[0])",
      "filler = x[0] if baseline == \"eos\" else torch.zeros_like(x[0])",
      "filled the authors' baseline with the start token's embedding, not the end token's",
      T_ATTR + "test_eq6_the_authors_baseline_scores_as_bos_then_eos_to_the_end"),
    slip("baseline-keeps-only-the-end-token", "clip_min/attribution.py", "keep[[0, eot]] = 1", "keep[[eot]] = 1",
      "kept only the end token in x', so the authors' baseline begins with an end token, not the start token",
      T_ATTR + "test_eq6_the_authors_baseline_scores_as_bos_then_eos_to_the_end"),
    slip("window-ends-at-k", "clip_min/attribution.py", "R_k = site.R[:, site.start : site.start + site.k].to(h.dtype)",
      "R_k = site.R[:, site.start : site.k].to(h.dtype)",
      "ended the mediation window at k, not start + k ([128, 256) for ig.py's [128, 384))",
      T_ATTR + "test_eq7_the_authors_window_mediates_through_rotated_coordinates_start_to_start_plus_k"),
    slip("window-ignores-its-start", "clip_min/attribution.py",
      "R_k = site.R[:, site.start : site.start + site.k].to(h.dtype)", "R_k = site.R[:, : site.k].to(h.dtype)",
      "mediated through the trained window [0, k) whatever start the authors' window gives",
      T_ATTR + "test_eq7_the_authors_window_mediates_through_rotated_coordinates_start_to_start_plus_k"),
    # ---- evaluation (docs/09) ----
    slip("ties-count-as-wins", "clip_min/metrics.py", "return float((c_des > c_cap).float().mean())",
      "return float((c_des >= c_cap).float().mean())", "counted a description that ties its caption as preferred",
      T_SEL + "test_preference_accuracy_counts_a_tie_as_no_win"),
    slip("bootstrap-90-percent", "clip_min/metrics.py", "tail = (1 - level) / 2 * 100", "tail = (1 - level) * 100",
      "cut 5% off each end and called the 90% interval 95%", T_EVAL + "test_bootstrap_interval_is_95_percent_on_a_distribution_known_exactly"),
    slip("transfer-score-median", "clip_min/metrics.py", "return float(np.mean([f1[t] / base_f1[t] for t in tasks]))",
      "return float(np.median([f1[t] / base_f1[t] for t in tasks]))", "took the median recovery over tasks, not the mean",
      T_SEL + "test_transfer_score_is_the_mean_recovery_over_three_tasks"),
    slip("transfer-score-ratio-of-sums", "clip_min/metrics.py", "return float(np.mean([f1[t] / base_f1[t] for t in tasks]))",
      "return float(sum(f1[t] for t in tasks) / sum(base_f1[t] for t in tasks))",
      "divided total F1 by total base F1 instead of averaging the recoveries",
      T_SEL + "test_transfer_score_is_the_mean_recovery_over_three_tasks"),
    slip("trade-off-weights-swapped", "clip_min/metrics.py", "return a * accuracy + (1 - a) * transfer",
      "return a * transfer + (1 - a) * accuracy", "put Appendix C's a on the transfer score",
      T_SEL + "test_recovery_transfer_score_and_trade_off_by_hand"),
    slip("recovery-inverted", "clip_min/metrics.py", "{task: value / base_f1[task] for", "{task: base_f1[task] / value for",
      "divided the base's F1 by the model's", T_SEL + "test_recovery_transfer_score_and_trade_off_by_hand"),
    slip("macro-f1-counts-absent-classes", "clip_min/metrics.py", "        if tp + fp + fn == 0:\n            continue\n",
      "        if tp + fp + fn == 0:\n            scores.append(0.0)\n            continue\n",
      "averaged in F1 = 0 for classes that never occur and are never predicted",
      T_EVAL + "test_macro_f1_against_a_count_by_hand"),
    slip("selection-latest-of-a-tie", "clip_min/train/selected.py",
      "return step > 0 and (best_score is None or score > best_score)",
      "return step > 0 and (best_score is None or score >= best_score)",
      "let a later step that ties the best trade-off replace it, where the earliest of a tie is selected",
      TIE, T_SEL + "test_the_earliest_of_a_tie_is_the_best_step"),
    slip("selection-step-0-a-candidate", "clip_min/train/selected.py",
      "return step > 0 and (best_score is None or score > best_score)",
      "return best_score is None or score > best_score",
      "let the step-0 evaluation, the untouched model and the base of the recovery, be selected", TIE),
    slip("selection-score-not-kept", "clip_min/train/selected.py",
      "progress.selected_step, progress.selected_score = record[\"step\"], value",
      "progress.selected_step = record[\"step\"]",
      "noted the selected step but not its trade-off, so every later evaluation beats it", TIE),
    slip("resume-may-change-the-seed", "clip_min/train/checkpoint.py",
      "\"eval_every\", \"checkpoint_every\", \"device\")", "\"eval_every\", \"checkpoint_every\", \"device\", \"seed\")",
      "let a resume change --seed, which draws the adapters, the data order and dropout: another run",
      T_CKPT + "test_a_resume_with_another_config_is_refused_naming_the_field[seed]"),
    slip("resume-forgets-the-selected-tensors", "clip_min/train/setup.py",
      "best = resumed.get(\"selected\") if resumed else None", "best = None",
      "started a resumed run with no selected tensors, so selected.pt keeps what the stopped run wrote after its checkpoint",
      RESUME_EVAL_EVERY),
    slip("resume-keeps-a-later-selection", "clip_min/train/setup.py",
      "    if main and best is not None:\n        selected.write(out, best)", "",
      "left selected.pt as the stopped run wrote it, which may be a step after the checkpoint never logged again",
      RESUME_EVAL_EVERY),
    slip("evaluate-in-train-mode", "clip_min/train/loop.py",
      "    model.eval()\n    if config.towers == \"both\":\n        refresh_image_features(model, [data.val, data.test]",
      "    if config.towers == \"both\":\n        refresh_image_features(model, [data.val, data.test]",
      "evaluated in train mode, so LoRA dropout drops part of every branch while scoring", DROPOUT_EVAL),
    slip("training-goes-on-in-eval-mode", "clip_min/train/loop.py", "config.trade_off_a, record.best)\n    model.train()\n",
      "config.trade_off_a, record.best)\n", "left the model in eval mode after an evaluation, so dropout stops for the rest of the run",
      DROPOUT_EVAL),
    slip("fp16-skip-told-by-the-loss", "clip_min/train/loop.py", "return run.scaler.get_scale() < scale",
      "return not math.isfinite(loss)", "told a skipped fp16 step by its loss, which stays finite when the backward pass overflows",
      T_CKPT + "test_fp16_counts_a_step_whose_gradient_overflowed_though_its_loss_is_finite"),
    slip("ratings-median", "clip_min/data/ratings.py", "{key: float(np.mean(v)) for key, v in values.items()}",
      "{key: float(np.median(v)) for key, v in values.items()}", "took each description's median rating, not the mean",
      T_EVAL + "test_three_or_more_ratings_of_a_description_give_their_mean_not_their_median"),
    slip("ratings-last-wins", "clip_min/data/ratings.py", "values[key].append(value)", "values[key] = [value]",
      "kept each description's last rating, each row overwriting the one before",
      T_EVAL + "test_three_or_more_ratings_of_a_description_give_their_mean_not_their_median"),
    # ---- image preprocessing ----
    slip("convert-before-resize", "clip_min/images.py", "    size = resized_size(image.width, image.height, resolution)\n",
      "    image = image.convert(\"RGB\")\n    size = resized_size(image.width, image.height, resolution)\n",
      "converted palette and RGBA images to RGB before resizing, where OpenAI converts after the crop",
      T_IMG + "test_modes_convert_to_rgb_after_the_crop_as_openai_does"),
    slip("bilinear-resize", "clip_min/images.py", "Image.Resampling.BICUBIC", "Image.Resampling.BILINEAR",
      "resized bilinearly; OpenAI resizes bicubically", T_IMG + "test_matches_float64_reference"),
    slip("crop-offset-floor", "clip_min/images.py", "top = int(round((image.height - resolution) / 2.0))",
      "top = (image.height - resolution) // 2", "rounded the crop's top offset down, where torchvision rounds to even",
      T_IMG + "test_center_crop_offsets_follow_torchvision"),
    slip("crop-offset-half-up", "clip_min/images.py", "left = int(round((image.width - resolution) / 2.0))",
      "left = int((image.width - resolution) / 2.0 + 0.5)", "rounded the crop's left offset half up, where torchvision rounds half to even",
      T_IMG + "test_center_crop_offsets_follow_torchvision"),
    slip("resize-rounds-the-long-side", "clip_min/images.py", "new_long = int(resolution * long / short)",
      "new_long = round(resolution * long / short)", "rounded the long side where torchvision truncates it",
      T_IMG + "test_long_side_is_truncated_not_rounded"),
    slip("resize-axes-swapped", "clip_min/images.py", "return (resolution, new_long) if width <= height else (new_long, resolution)",
      "return (new_long, resolution) if width <= height else (resolution, new_long)", "gave PIL (height, width) where it takes (width, height)",
      T_IMG + "test_matches_float64_reference"),
    slip("imagenet-mean", "clip_min/images.py", "MEAN = (0.48145466, 0.4578275, 0.40821073)", "MEAN = (0.485, 0.456, 0.406)",
      "normalised with ImageNet's mean instead of CLIP's", T_IMG + "test_constants_are_openais"),
    slip("pixels-not-scaled", "clip_min/images.py", ".permute(2, 0, 1).float().div(255)", ".permute(2, 0, 1).float()",
      "normalised pixels on the 0-255 scale", T_IMG + "test_matches_float64_reference"),
    slip("bgr-channels", "clip_min/images.py", 'pixels = np.asarray(rgb, dtype=np.uint8)',
      'pixels = np.asarray(rgb, dtype=np.uint8)[..., ::-1]', "fed the channels in OpenCV's BGR order",
      T_IMG + "test_matches_float64_reference"),
    slip("16-bit-floored", "clip_min/images.py", "scaled = np.clip(np.round(values * (255 / FULL_SCALE[image.mode])), 0, 255)",
      "scaled = np.clip(np.floor(values * (255 / FULL_SCALE[image.mode])), 0, 255)",
      "truncated 16-bit and float pixels to 8 bits instead of rounding", SIXTEEN_BIT + "[I;16]", FLOAT_PIXELS),
    slip("16-bit-shifted-by-8", "clip_min/images.py", 'FULL_SCALE = {"I;16": 65535,', 'FULL_SCALE = {"I;16": 65280,',
      "scaled 16-bit pixels by v / 256 (a shift by 8 bits), not v * 255 / 65535", SIXTEEN_BIT + "[I;16]"),
    slip("32-bit-full-scale", "clip_min/images.py", '"I": 65535, "F": 1.0}', '"I": 2**31 - 1, "F": 1.0}',
      "scaled mode I by its 32-bit range, where PIL keeps 16-bit PNGs in it", SIXTEEN_BIT + "[I]"),
    slip("float-pixels-on-the-0-255-scale", "clip_min/images.py", '"I": 65535, "F": 1.0}', '"I": 65535, "F": 255.0}',
      "read float pixels on the 0-255 scale, where 1.0 is white", FLOAT_PIXELS),
    slip("8-bit-not-clipped", "clip_min/images.py", "scaled = np.clip(np.round(values * (255 / FULL_SCALE[image.mode])), 0, 255)",
      "scaled = np.round(values * (255 / FULL_SCALE[image.mode]))",
      "left out the clip to 0..255, so values past the full scale wrap around in uint8", SIXTEEN_BIT + "[I]", FLOAT_PIXELS),
    # ---- the tokenizer ----
    slip("no-lowercase", "clip_min/tokenizer.py", "return text.lower()", "return text",
      "kept upper case, which CLIP's vocabulary does not have", T_TOK + "test_encode_matches_openai"),
    slip("html-unescaped-once", "clip_min/tokenizer.py", "text = html.unescape(html.unescape(text)).strip()",
      "text = html.unescape(text).strip()", "unescaped HTML once, where OpenAI does it twice (&amp;amp;)",
      T_TOK + "test_encode_matches_openai"),
    slip("no-ftfy", "clip_min/tokenizer.py", "text = ftfy.fix_text(text)", "text = text.strip()",
      "skipped ftfy's repair of mojibake", T_TOK + "test_encode_matches_openai"),
    slip("no-end-of-word-marker", "clip_min/tokenizer.py", 'parts = list(word[:-1]) + [word[-1] + "</w>"]', "parts = list(word)",
      "left the </w> end-of-word marker off the last character", T_TOK + "test_known_example"),
    slip("bpe-merges-latest-first", "clip_min/tokenizer.py", "best = min(zip(parts, parts[1:]),", "best = max(zip(parts, parts[1:]),",
      "applied the pair learned last instead of first", T_TOK + "test_known_example"),
    slip("digits-grouped", "clip_min/tokenizer.py", r"[\p{L}]+|[\p{N}]|", r"[\p{L}]+|[\p{N}]+|",
      "kept runs of digits together; CLIP splits every digit", T_TOK + "test_encode_matches_openai"),
    slip("no-contractions", "clip_min/tokenizer.py", r"<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|", r"<\|endoftext\|>|",
      "left the contractions ('s, 't, ...) out of the word pattern", T_TOK + "test_encode_matches_openai"),
    slip("truncation-drops-eot", "clip_min/tokenizer.py", "ids = ids[: context_length - 1] + [EOT]", "ids = ids[:context_length]",
      "cut long texts without putting the end token back", T_TOK + "test_too_long_raises_and_truncates"),
    # ---- the weights loaders ----
    slip("hf-text-projection-not-transposed", "clip_min/weights.py",
      'out["text_projection"] = value.t().contiguous()', 'out["text_projection"] = value',
      "kept HF's text_projection as nn.Linear's (out, in), not OpenAI's (in, out)", HF_SMALL),
    slip("hf-visual-projection-not-transposed", "clip_min/weights.py",
      'out["visual.proj"] = value.t().contiguous()', 'out["visual.proj"] = value',
      "kept HF's visual_projection as nn.Linear's (out, in)", HF_SMALL),
    slip("hf-k-q-v-stacked", "clip_min/weights.py", 'out[name] = torch.cat([parts["q"], parts["k"], parts["v"]])',
      'out[name] = torch.cat([parts["k"], parts["q"], parts["v"]])', "stacked HF's q, k, v projections in the wrong order", HF_SMALL),
    slip("hf-layer-norms-swapped", "clip_min/weights.py", '".layer_norm1.": ".ln_1.",\n        ".layer_norm2.": ".ln_2.",',
      '".layer_norm1.": ".ln_2.",\n        ".layer_norm2.": ".ln_1.",', "mapped HF's layer_norm1 to ln_2 and layer_norm2 to ln_1", HF_SMALL),
    slip("hf-heads-from-the-width", "clip_min/weights.py",
      "        config = dataclasses.replace(config, **_heads_from_hf_config(hf_config, path))\n", "        pass\n",
      "took OpenAI's width // 64 heads for a Hugging Face model whose config.json says otherwise", HF_SMALL),
    slip("export-k-q-v-split", "clip_min/weights.py", 'for letter, part in zip("qkv", value.chunk(3)):',
      'for letter, part in zip("kqv", value.chunk(3)):', "split the fused in_proj into k, q, v when exporting to HF",
      T_EVAL + "test_export_hf_loads_in_transformers"),
    slip("openai-text-heads-fixed", "clip_min/weights.py", "text_heads=text_width // 64,", "text_heads=8,",
      "hard-coded ViT-B/32's 8 text heads instead of reading width // 64 off the weights", OPENAI_SMALL),
    slip("openai-resolution-fixed", "clip_min/weights.py", "image_resolution=conv1.shape[-1] * grid,", "image_resolution=224,",
      "hard-coded 224 pixels instead of reading patch x grid off the weights", OPENAI_SMALL),
)

# A fixed sample that tests/test_exercises.py runs on every CI run (the whole catalogue is a command).
CI_SAMPLE = ("exact-gelu", "eot-by-counting-non-zero-ids", "logits-texts-by-images", "eq1-caption-wins",
             "lora-dropout-on-the-output", "orthogonal-map-ignored", "interchange-rows-of-R", "eq7-rows-of-R",
             "transfer-score-median", "ties-count-as-wins", "bootstrap-90-percent", "convert-before-resize",
             "crop-offset-half-up", "hf-text-projection-not-transposed", "one-way-source-detached",
             "selection-latest-of-a-tie")


def select(names: list[str] | None) -> list[Mistake]:
    """The entries named, in catalogue order; all of them for None."""
    from . import ExerciseError

    if not names:
        return list(MISTAKES)
    known = {m.name for m in MISTAKES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ExerciseError(f"no mistake {', '.join(map(repr, unknown))} in the catalogue; "
                            "python -m clip_min.exercises mistakes --table lists them")
    return [m for m in MISTAKES if m.name in names]


def apply(text: str, mistake: Mistake) -> str:
    """``text`` with the mistake's edit made; ValueError unless its old text occurs exactly once."""
    count = text.count(mistake.old)
    if count != 1:
        raise ValueError(f"{mistake.file} holds the text to replace {count} times, not once; "
                         f"update entry {mistake.name!r} in clip_min/exercises/mistakes.py")
    return text.replace(mistake.old, mistake.new)


@dataclass
class Outcome:
    mistake: Mistake
    status: str  # "caught", "missed" or "broken"
    detail: str  # the failing test, or why it is broken
    seconds: float


HEAVY = ("torch", "numpy", "scipy.stats", "PIL.Image", "pytest", "regex", "ftfy", "transformers", "safetensors.torch", "peft")


def _preload() -> None:
    """Import what every child needs and is slow to import, once, before forking."""
    for name in HEAVY:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # a test that needs it will say so


def _pytest_args(mistake: Mistake) -> list[str]:
    return ["-x", "-q", "-p", "no:cacheprovider", *mistake.tests]


def _run_forked(copy: Path, mistake: Mistake, log: Path) -> int:
    pid = os.fork()
    if pid == 0:  # the child: the copy's clip_min and tests, imported afresh
        code = 3
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(copy)
            for name in list(sys.modules):
                if name.split(".")[0] in ("clip_min", "tiny", "eval", "train") or name.startswith("test_"):
                    del sys.modules[name]
            sys.path.insert(0, str(copy))
            import pytest

            code = int(pytest.main(_pytest_args(mistake)))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + TIME_LIMIT_S
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.05)


def _run_subprocess(copy: Path, mistake: Mistake, log: Path) -> int:
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", *_pytest_args(mistake)], cwd=copy, capture_output=True,
                              text=True, timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired:
        return -9
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    return done.returncode


def first_failure(output: str) -> str:
    """The first 'FAILED node - message' line of pytest's summary, shortened to the test's name."""
    for line in output.splitlines():
        m = re.match(r"(FAILED|ERROR) (\S+)", line)
        if m:
            return m.group(2).split("::")[-1]
    return "a test failed"


def run(mistakes: list[Mistake], progress=print) -> list[Outcome]:
    """Apply each mistake alone in a fresh copy of the repository and run its tests; returns the outcomes."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: a second thread only waits
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    forking = hasattr(os, "fork")
    if forking:
        _preload()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="clip_min_mistakes_") as tmp:
        copy = Path(tmp) / "copy"
        copy_repository(copy)
        log = Path(tmp) / "pytest.log"
        for mistake in mistakes:
            start = time.monotonic()
            target = copy / mistake.file
            original = target.read_text(encoding="utf-8")
            try:
                target.write_text(apply(original, mistake), encoding="utf-8")
            except ValueError as error:
                outcomes.append(Outcome(mistake, "broken", str(error), 0.0))
                progress(format_outcome(outcomes[-1]))
                continue
            try:
                code = (_run_forked if forking else _run_subprocess)(copy, mistake, log)
            finally:
                target.write_text(original, encoding="utf-8")
            output = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
            seconds = time.monotonic() - start
            if code == 1:
                outcome = Outcome(mistake, "caught", first_failure(output), seconds)
            elif code == 0:
                outcome = Outcome(mistake, "missed", "every test passed", seconds)
            else:
                last = (output.strip().splitlines() or ["(no output)"])[-1]
                why = f"ran past {TIME_LIMIT_S} s" if code == -9 else f"pytest exit {code}: {last}"
                outcome = Outcome(mistake, "broken", why, seconds)
            outcomes.append(outcome)
            progress(format_outcome(outcome))
    return outcomes


def format_outcome(outcome: Outcome) -> str:
    return (f"{outcome.status:<6}  {outcome.mistake.name}: {outcome.mistake.what}"
            f"  [{outcome.detail}; {outcome.seconds:.1f} s]")


def table() -> str:
    """The catalogue as a markdown table, for the teacher's page (docs/teaching.md holds a copy; a test keeps them equal)."""
    lines = ["| # | mistake | file | what the student did | caught by |", "|---|---|---|---|---|"]
    for i, m in enumerate(MISTAKES, 1):
        tests = ", ".join(f"`{t.split('::')[-1]}`" for t in m.tests)
        lines.append(f"| {i} | `{m.name}` | `{m.file}` | {m.what} | {tests} |")
    return "\n".join(lines)
