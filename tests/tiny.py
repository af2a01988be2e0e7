"""A tiny CLIP and random token ids shared by the tests of LoRA and the intervention."""

import importlib.util
from pathlib import Path

import pytest
import torch

from clip_min.model import CLIP, CLIPConfig

# A vocabulary of 1,000 ids: 998 stands for the start token and 999, the largest id, for the end
# token, as 49406 and 49407 do in CLIP's vocabulary.
TINY = CLIPConfig(
    embed_dim=32, image_resolution=32, vision_patch_size=8, vision_width=64, vision_layers=2, vision_heads=2,
    context_length=77, vocab_size=1000, text_width=64, text_layers=3, text_heads=2,
)


def tiny_model(seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(TINY)


def random_tokens(batch: int, seed: int = 0) -> torch.Tensor:
    """Zero-padded ids of random texts 3 to 19 tokens long, start 998, end 999."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(batch, TINY.context_length, dtype=torch.long)
    for i in range(batch):
        length = int(torch.randint(3, 20, (1,), generator=generator))
        tokens[i, 0], tokens[i, length - 1] = 998, 999
        tokens[i, 1 : length - 1] = torch.randint(1, 998, (length - 2,), generator=generator)
    return tokens


# A tiny CLIP that saves in OpenAI's format (which derives the heads from width // 64, so the
# towers are 64 wide with one head each) and has CLIP's vocabulary, so real text tokenizes.
TINY_OPENAI = CLIPConfig(embed_dim=32, image_resolution=32, vision_patch_size=16, vision_width=64, vision_layers=1,
                         vision_heads=1, text_width=64, text_layers=2, text_heads=1)


def tiny_world(tmp_path_factory, name: str, n_articles: int):
    """For a module fixture: a tiny toy world and a random TINY_OPENAI base saved beside it.

    The feature cache goes into the same folder, and torch runs one thread (on a shared CPU,
    more threads make these tiny steps slower, not faster); both are undone at the end.
    """
    from clip_min.data.toy import make_toy_world
    from clip_min.weights import save_clip

    root = tmp_path_factory.mktemp(name)
    env = pytest.MonkeyPatch()
    env.setenv("CLIP_MIN_CACHE", str(root / "cache"))
    env.setenv("OMP_NUM_THREADS", "1")  # for subprocesses
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    world = make_toy_world(root / "toy", n_articles=n_articles, transfer_per_class=3)
    torch.manual_seed(0)
    save_clip(CLIP(TINY_OPENAI), root / "base.pt")
    yield dict(world=world, base=root / "base.pt", root=root)
    torch.set_num_threads(threads)
    env.undo()


def as_flags(options: dict) -> list[str]:
    """{"lora_rank": 4, ...} -> ["--lora-rank", "4", ...], as train.py reads them."""
    return [part for name, value in options.items() for part in (f"--{name.replace('_', '-')}", str(value))]


def run_flags(setup, out, **options) -> list[str]:
    """train.py's flags for a two-step behavioral LoRA run on a tiny_world, scored on its colour task.

    ``options`` override them; ``out=None`` leaves --out out (train.py's default folder). The run
    evaluates at steps 0, N, 2N, ... and its last (--eval-schedule run), not after each epoch's
    first batch as the authors' recipe, which real-format data takes by default, would.
    """
    world = setup["world"]
    chosen = dict(weights=setup["base"], data=world / "concadia", transfer=world / "transfer" / "color",
                  objective="behavioral", lora_rank=4, lr=1e-2, device="cpu", amp="off", max_steps=2, eval_every=2,
                  eval_schedule="run")
    if out is not None:
        chosen["out"] = out
    chosen.update(options)
    return as_flags(chosen)


# The joint (Eq. 5) run the checkpoint and safety tests take: the intervention at block 0, half its width.
JOINT_AT_BLOCK_0 = dict(objective="joint", layer=0, intervention_size=32)


def one_line_error(capsys, script: str) -> str:
    """The last line ``script`` wrote to stderr, checked to be its one-line error and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"{script}: error: "), err[-2000:]
    return line


def run_eval(argv, capsys) -> tuple[int, str, str]:
    """eval.py's main on ``argv``: its exit code, stdout and stderr."""
    import eval as eval_script

    code = eval_script.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def openai_reference(name: str):
    """OpenAI's clip/NAME.py from the openai-clip package, loaded by file path (its __init__ needs torchvision)."""
    folder = Path(importlib.util.find_spec("clip").submodule_search_locations[0])
    spec = importlib.util.spec_from_file_location(f"openai_clip_{name}", folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scripted_evaluations(monkeypatch, accuracy: dict[int, float], crash_after: set[int] = frozenset()) -> dict:
    """Make train.py's evaluations log validation accuracy ``accuracy[step]`` and no transfer tasks.

    Each evaluation logs the test accuracy as the validation accuracy less 0.1 and no transfer F1,
    so Appendix C selects by validation accuracy alone (as a run without --transfer does). Returns
    {step: {name: tensor}}: copies of what the run trains, taken as each evaluation begins. A step
    in ``crash_after`` raises KeyboardInterrupt once its evaluation is logged, as Ctrl-C there would.
    """
    from clip_min.train import loop

    now, trained, real = {}, {}, loop.evaluate
    crash_after = set(crash_after)

    def evaluate(run, step):
        now.update(step=step, val=run.evaluation.val)
        trained[step] = {name: p.detach().clone() for name, p in run.model.named_parameters() if p.requires_grad}
        real(run, step)
        if step in crash_after:
            crash_after.discard(step)
            raise KeyboardInterrupt

    def split_accuracy(model, split, device, autocast):
        return accuracy[now["step"]] - (0.0 if split is now["val"] else 0.1)

    monkeypatch.setattr(loop, "evaluate", evaluate)
    monkeypatch.setattr(loop, "split_accuracy", split_accuracy)
    monkeypatch.setattr(loop, "transfer_f1", lambda *args: {})
    return trained
