"""Eq. 6 (integrated gradients) and Eq. 7 (mediated gradients) on a tiny random CLIP; words; word norms."""
import argparse
import json
import re

import pytest
import torch
from PIL import Image
from scipy import stats

from clip_min import attribution
from clip_min.attribution import (
    DEFAULT_STEPS,
    integrated_gradients,
    mediated_integrated_gradients,
    text_features_from_embeddings,
    word_attributions,
)
from clip_min.data.norms import NormsError, read_brysbaert_concreteness, read_glasgow_norms
from clip_min.report import attribute
from clip_min.report.correlation import correlate_with_norms, format_correlation_table
from clip_min.report.html import ansi_line, attribution_page, html_words, page_scale
from clip_min.losses import score
from clip_min.model import CLIP, CLIPConfig
from clip_min.rotation import Rotation
from clip_min.tokenizer import tokenize
from clip_min.data.toy import make_toy_world, toy_word_ratings, write_glasgow_norms
from clip_min.weights import save_clip

from test_model import block_float64, layer_norm_float64

# The real vocabulary (the tests use the real tokenizer), everything else tiny; heads = width // 64
# as OpenAI's format requires (the attribute command loads it from a file).
TINY = CLIPConfig(
    embed_dim=32, image_resolution=32, vision_patch_size=8, vision_width=64, vision_layers=2, vision_heads=1,
    context_length=77, vocab_size=49408, text_width=64, text_layers=3, text_heads=1,
)
TEXTS = ["Two large red circles on the left of a grey square.", "The Varga medallion at the 1923 Lyon fair."]


@pytest.fixture(scope="module")
def model() -> CLIP:
    torch.manual_seed(0)
    return CLIP(TINY).eval()


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(1)
    return torch.randn(len(TEXTS), TINY.embed_dim), tokenize(TEXTS)


def orthogonal(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(TINY.text_width, TINY.text_width, generator=generator))[0]


def hooked_score(model: CLIP, image: torch.Tensor, tokens: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """C(im, text) through model.encode_text itself, its token embeddings replaced by ``embeddings`` (1, L, width)."""
    handle = model.token_embedding.register_forward_hook(lambda module, args, out: embeddings)
    try:
        return score(image, model.encode_text(tokens), model.logit_scale)
    finally:
        handle.remove()


def test_text_tower_from_embeddings_matches_encode_text(model, inputs):
    _, tokens = inputs
    x, eot = model.embed_text(tokens)
    embeddings = model.token_embedding(tokens[:, : x.shape[1]])
    with torch.no_grad():
        torch.testing.assert_close(text_features_from_embeddings(model, embeddings, eot), model.encode_text(tokens),
                                   rtol=0, atol=1e-6)


def test_eq6_completeness(model, inputs):
    image, tokens = inputs
    result = integrated_gradients(model, image, tokens)  # the default step count
    change = result.score - result.baseline_score
    assert (change.abs() > 1e-3).all()  # a real change to explain
    assert ((result.attributions.sum(-1) - change).abs() <= 0.01 * change.abs()).all()
    with torch.no_grad():
        torch.testing.assert_close(result.score, score(image, model.encode_text(tokens), model.logit_scale),
                                   rtol=0, atol=1e-5)


def test_eq6_matches_a_hand_computed_three_point_rule(model, inputs):
    """steps=3: weights 1/4, 1/2, 1/4 at t = 0, 1/2, 1, each gradient taken through encode_text, in float64 after."""
    image, tokens = inputs
    row = tokens[:1]
    eot = int(row.argmax())
    x = model.token_embedding(row[:, : eot + 1]).detach()  # (1, L, width)
    baseline = x.clone()
    baseline[:, 1:eot] = 0  # the start and end tokens stay
    expected = torch.zeros(eot + 1, dtype=torch.float64)
    for t, weight in ((0.0, 0.25), (0.5, 0.5), (1.0, 0.25)):
        point = (baseline + t * (x - baseline)).requires_grad_(True)
        (grad,) = torch.autograd.grad(hooked_score(model, image[:1], row, point).sum(), point)
        expected += weight * ((x - baseline).double() * grad.double())[0].sum(-1)
    got = integrated_gradients(model, image[:1], row, steps=3).attributions[0, : eot + 1]
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-6)
    assert got[0] == 0 and got[eot] == 0  # x_i - x'_i = 0 at the start and end tokens


def test_eq6_baseline_score_is_the_empty_text(model, inputs):
    image, tokens = inputs
    eot = int(tokens[0].argmax())
    empty = model.token_embedding(tokens[:1, : eot + 1]).detach()
    empty[:, 1:eot] = 0
    with torch.no_grad():
        expected = hooked_score(model, image[:1], tokens[:1], empty)
    got = integrated_gradients(model, image[:1], tokens[:1], steps=2).baseline_score
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_eq6_the_authors_baseline_scores_as_bos_then_eos_to_the_end(model, inputs):
    """ig.py's x': [BOS, EOS, ..., EOS] of the text's length (its padding id is the end token, 49407)."""
    image, tokens = inputs
    for row in range(len(TEXTS)):
        end = int(tokens[row].argmax())  # the end token's position
        ids = torch.full((1, end + 1), 49407)
        ids[0, 0] = 49406
        authors = model.token_embedding(ids).detach()
        ours = authors.clone()
        ours[:, 1:end] = 0  # the other baseline: the inner tokens zero
        with torch.no_grad():
            expected = hooked_score(model, image[row : row + 1], tokens[row : row + 1], authors)
            other = hooked_score(model, image[row : row + 1], tokens[row : row + 1], ours)
        got = integrated_gradients(model, image[row : row + 1], tokens[row : row + 1], steps=2, baseline="eos")
        assert (expected - other).abs().max() > 1e-2  # the two baselines are told apart
        torch.testing.assert_close(got.baseline_score, expected, rtol=0, atol=1e-5)


def test_eq7_mediated_is_zero_when_the_site_is_cut(model, inputs):
    image, tokens = inputs
    cut = mediated_integrated_gradients(model, image, tokens, orthogonal(0), layer=1, k=0, steps=8)
    assert torch.equal(cut.attributions, torch.zeros_like(cut.attributions))


def test_eq7_mediated_plus_around_is_total(model, inputs):
    image, tokens = inputs
    R, steps = orthogonal(0), 16
    total = integrated_gradients(model, image, tokens, steps=steps).attributions
    mediated = mediated_integrated_gradients(model, image, tokens, R, layer=1, k=32, steps=steps).attributions
    around = mediated_integrated_gradients(model, image, tokens, R, layer=1, k=32, steps=steps, around=True).attributions
    assert mediated.abs().max() > 1e-3 and around.abs().max() > 1e-3  # both parts carry something
    torch.testing.assert_close(mediated + around, total, rtol=0, atol=1e-5 * total.abs().max().item())


def test_eq7_the_whole_last_block_end_state_mediates_everything(model, inputs):
    """After the last block only the end-of-text state reaches C: with H = all of it, mediated = total."""
    image, tokens = inputs
    total = integrated_gradients(model, image, tokens, steps=8).attributions
    everything = mediated_integrated_gradients(model, image, tokens, orthogonal(1), layer=TINY.text_layers - 1,
                                               k=TINY.text_width, steps=8).attributions
    torch.testing.assert_close(everything, total, rtol=0, atol=1e-5 * total.abs().max().item())


def mediated_gradient_float64(model: CLIP, image: torch.Tensor, z: torch.Tensor, P: torch.Tensor, layer: int) -> torch.Tensor:
    """dC/dz through H alone, in float64: (dh_eot/dz)^T P dC/dh_eot, with every other position of block ``layer``'s output held fixed.

    z (L, width) are the token embeddings of one text whose end token is its last position.
    """
    z = z.detach().double().requires_grad_(True)
    eot = z.shape[0] - 1
    h = (z + model.positional_embedding[: eot + 1].detach().double())[None]  # (1, L, width)
    for block in model.transformer.resblocks[: layer + 1]:
        h = block_float64(block, h, causal=True)
    h_eot = h[0, eot]
    site = h_eot.detach().requires_grad_(True)  # the end token's state, as a leaf of its own
    x = torch.cat([h.detach()[:, :eot], site[None, None]], dim=1)
    for block in model.transformer.resblocks[layer + 1 :]:
        x = block_float64(block, x, causal=True)
    features = layer_norm_float64(x[0, eot], model.ln_final) @ model.text_projection.double()
    i = image.double()
    c = model.logit_scale.double().exp() * (i @ features) / (i.norm() * features.norm())
    (dc_dsite,) = torch.autograd.grad(c, site, retain_graph=False)
    (dc_dz,) = torch.autograd.grad(h_eot, z, grad_outputs=dc_dsite @ P)  # P is symmetric: row or column, the same
    return dc_dz


def test_eq7_mediated_gradient_is_the_projection_onto_the_first_k_columns_of_R(model, inputs):
    """k < width and a random rotation, so only P = R_{:, :k} R_{:, :k}^T gives these numbers (not R's rows, not I)."""
    image, tokens = inputs
    layer, k = 1, 20
    R = orthogonal(2)
    P = R[:, :k].double() @ R[:, :k].double().T
    eot = int(tokens[0].argmax())
    x = model.token_embedding(tokens[0, : eot + 1]).detach().double()  # (L, width)
    baseline = x.clone()
    baseline[1:eot] = 0
    # steps = 2: the trapezoid rule with weights 1/2, 1/2 at the baseline and at x
    gradient = (mediated_gradient_float64(model, image[0], baseline, P, layer)
                + mediated_gradient_float64(model, image[0], x, P, layer)) / 2
    expected = ((x - baseline) * gradient).sum(-1)  # (L,)
    got = mediated_integrated_gradients(model, image[:1], tokens[:1], R, layer=layer, k=k, steps=2).attributions[0, : eot + 1]
    assert expected.abs().max() > 1e-2  # something passes through H
    # float32 through 3 blocks and back: ~1e-6 of the largest attribution; 1e-4 of it leaves room.
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-4 * expected.abs().max().item())


def test_eq7_the_authors_complement_is_the_end_state_outside_H_and_nothing_else(model, inputs):
    """ig.py's "around": (dh_eot/dz)^T (I - P) dC/dh_eot, with P onto rotated [start, start + k) and the
    block's other positions held fixed, in float64. Ours lets those positions through as well; at block
    1 of 3 the last block reads them, so the two complements differ, and only ours completes the total."""
    image, tokens = inputs
    layer, k, start = 1, 20, 16
    R = orthogonal(3)
    window = R[:, start : start + k].double()
    outside = torch.eye(TINY.text_width, dtype=torch.float64) - window @ window.T
    eot = int(tokens[0].argmax())
    x = model.token_embedding(tokens[0, : eot + 1]).detach().double()  # (L, width)
    baseline = x.clone()
    baseline[1:eot] = 0
    gradient = (mediated_gradient_float64(model, image[0], baseline, outside, layer)
                + mediated_gradient_float64(model, image[0], x, outside, layer)) / 2  # trapezoid, steps = 2
    expected = ((x - baseline) * gradient).sum(-1)  # (L,)
    site = dict(R=R, layer=layer, k=k, start=start, steps=2)
    authors = mediated_integrated_gradients(model, image[:1], tokens[:1], around=True, complement="end-state",
                                            **site).attributions[0, : eot + 1]
    assert expected.abs().max() > 1e-2
    torch.testing.assert_close(authors.double(), expected, rtol=0, atol=1e-4 * expected.abs().max().item())
    ours = mediated_integrated_gradients(model, image[:1], tokens[:1], around=True, **site).attributions[0, : eot + 1]
    through = mediated_integrated_gradients(model, image[:1], tokens[:1], **site).attributions[0, : eot + 1]
    total = integrated_gradients(model, image[:1], tokens[:1], steps=2).attributions[0, : eot + 1]
    other_positions = (ours - authors).double()
    assert other_positions.abs().max() > 0.1 * expected.abs().max()  # what the authors' rows leave out
    torch.testing.assert_close(through + ours, total, rtol=0, atol=1e-5 * total.abs().max().item())
    assert (through + authors - total).abs().max() > 0.1 * expected.abs().max()


def test_eq7_the_authors_window_mediates_through_rotated_coordinates_start_to_start_plus_k(model, inputs):
    """ig.py's [128, 384) of 512, scaled down: H is R's columns [16, 36) here, not [0, 20) nor [16, 20)."""
    image, tokens = inputs
    layer, k, start = 1, 20, 16
    R = orthogonal(4)
    window = R[:, start : start + k].double()
    eot = int(tokens[1].argmax())
    x = model.token_embedding(tokens[1, : eot + 1]).detach().double()  # (L, width)
    baseline = x.clone()
    baseline[1:eot] = 0
    gradient = (mediated_gradient_float64(model, image[1], baseline, window @ window.T, layer)
                + mediated_gradient_float64(model, image[1], x, window @ window.T, layer)) / 2  # trapezoid, steps = 2
    expected = ((x - baseline) * gradient).sum(-1)  # (L,)
    got = mediated_integrated_gradients(model, image[1:2], tokens[1:2], R, layer=layer, k=k, start=start,
                                        steps=2).attributions[0, : eot + 1]
    assert expected.abs().max() > 1e-2
    # As above: float32 through 3 blocks and back, ~1e-6 of the largest attribution.
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-4 * expected.abs().max().item())


def test_eq7_rejects_a_bad_site(model, inputs):
    image, tokens = inputs
    with pytest.raises(ValueError, match="layer must be in 0..2"):
        mediated_integrated_gradients(model, image, tokens, orthogonal(0), layer=3, k=4)
    with pytest.raises(ValueError, match="R must be 64 x 64"):
        mediated_integrated_gradients(model, image, tokens, torch.eye(8), layer=1, k=4)
    with pytest.raises(ValueError, match="complement 'rest'"):
        mediated_integrated_gradients(model, image, tokens, orthogonal(0), layer=1, k=4, around=True, complement="rest")


def test_words_join_bpe_pieces_and_drop_start_and_end():
    ids = tokenize("A cat's whiskers, 2024!")[0]
    # pieces: <sot> a cat 's whis kers , 2 0 2 4 ! <eot>: give each position its index
    words = word_attributions(ids, torch.arange(77, dtype=torch.float32))
    assert [w for w, _ in words] == ["a", "cat", "'s", "whiskers", ",", "2", "0", "2", "4", "!"]
    assert dict(words)["whiskers"] == 4 + 5  # two pieces, summed
    assert words[0] == ("a", 1.0)


def test_terminal_and_html_colours():
    words = [("red", 2.0), ("varga", -1.0), ("the", 0.0)]
    assert ansi_line(words, color=False) == "red[+2.000] varga[-1.000] the[+0.000]"
    assert ansi_line([("a", 7.05e-05), ("b", -0.0004), ("c", 12.3456)], color=False) == "a[+0.000] b[-0.000] c[+12.346]"
    line = ansi_line(words, color=True)
    assert "\x1b[30;48;2;0;170;0m red " in line  # the largest positive: full green
    assert "\x1b[30;48;2;228;128;228m varga " in line  # half as large, negative: half magenta
    fragment = html_words(words + [("<b>", 0.5)], scale=2.0)
    assert "rgba(0, 170, 0, 1.00)" in fragment and "rgba(200, 0, 200, 0.50)" in fragment
    assert "&lt;b&gt;" in fragment
    assert "red<small>+2.000</small>" in fragment and "varga<small>-1.000</small>" in fragment  # shown, not on hover
    page = attribution_page("t", [fragment], scale=2.0)
    assert page.startswith("<!doctype html>") and fragment in page and "|attribution| = 2," in page


def test_texts_shown_together_share_one_colour_scale():
    """A caption whose words barely move C must not look as strong as a description whose words carry it."""
    description, caption = [("red", 4.0), ("circle", 2.0)], [("varga", 1.0), ("fair", -0.5)]
    scale = page_scale([description, caption])
    assert scale == 4.0
    assert "rgba(0, 170, 0, 0.25)" in html_words(caption, scale)  # 1 of 4: a quarter of the colour
    assert "\x1b[30;48;2;191;234;191m varga " in ansi_line(caption, True, scale)  # 255 - 0.25 * (255 - 170) = 234
    assert "\x1b[30;48;2;0;170;0m varga " in ansi_line(caption, True)  # alone, its own largest is full colour


GLASGOW = """Words,Length,AROU,,,VAL,,,CNC,,,IMAG,,,FAM,,
,,M,SD,N,M,SD,N,M,SD,N,M,SD,N,M,SD,N
circle,6,3.1,1.2,33,5.0,1.0,33,6.5,0.8,33,6.8,0.4,33,6.0,1.0,33
bank (money),4,4.0,1.0,32,5.0,1.0,32,5.9,1.0,32,5.5,1.0,32,6.5,1.0,32
bank (river),4,4.0,1.0,32,5.0,1.0,32,6.1,1.0,32,6.5,1.0,32,5.5,1.0,32
Justice,7,5.0,1.0,33,6.0,1.0,33,2.0,1.0,33,3.0,1.0,33,5.0,1.0,33

"""
BRYSBAERT = ("Word\tBigram\tConc.M\tConc.SD\tUnknown\tTotal\tPercent_known\tSUBTLEX\tDom_Pos\n"
              "circle\t0\t4.83\t0.38\t0\t30\t1.00\t1820\tNoun\n"
              "justice\t0\t1.45\t0.83\t0\t29\t1.00\t2421\tNoun\n"
              "red tape\t1\t2.53\t1.50\t1\t30\t0.97\t0\t#N/A\n")


def test_glasgow_norms_in_the_released_layout(tmp_path):
    path = tmp_path / "glasgow.csv"
    path.write_text(GLASGOW)
    imageability = read_glasgow_norms(path)
    assert imageability == {"circle": 6.8, "bank": 6.0, "justice": 3.0}  # senses averaged, words lowercased
    assert read_glasgow_norms(path, "CNC")["circle"] == 6.5


def test_the_authors_norm_words_are_the_files_strings_as_written(tmp_path):
    """ig.py joins tokens to the norms' words by exact string: no lower case, no folding of senses."""
    glasgow, brysbaert = tmp_path / "glasgow.csv", tmp_path / "brysbaert.txt"
    glasgow.write_text(GLASGOW + "circle,6,3.1,1.2,33,5.0,1.0,33,6.5,0.8,33,6.0,0.4,33,6.0,1.0,33\n")
    brysbaert.write_text(BRYSBAERT)
    exact = read_glasgow_norms(glasgow, exact=True)
    assert exact == {"circle": 6.4, "bank (money)": 5.5, "bank (river)": 6.5, "Justice": 3.0}  # a word twice: its mean
    assert "justice" not in exact and "bank" not in exact
    assert read_brysbaert_concreteness(brysbaert, exact=True)["red tape"] == 2.53


def test_glasgow_reader_reads_the_toy_norms(tmp_path):
    ratings = toy_word_ratings()
    write_glasgow_norms(tmp_path / "norms.csv", ratings)
    assert read_glasgow_norms(tmp_path / "norms.csv") == pytest.approx(ratings, abs=1e-3)


def test_brysbaert_concreteness_in_the_released_layout(tmp_path):
    path = tmp_path / "Concreteness_ratings_Brysbaert_et_al_BRM.txt"
    path.write_text(BRYSBAERT)
    assert read_brysbaert_concreteness(path) == {"circle": 4.83, "justice": 1.45, "red tape": 2.53}


@pytest.mark.parametrize("reader, text, message", [
    (read_glasgow_norms, "Words,Length,AROU\n,,M\ncat,3,4.0\n", "not in the Glasgow Norms format"),
    (read_glasgow_norms, "Words,IMAG,,\n,SD,N,M\ncat,1,2,3\n", "no 'M' under 'IMAG'"),
    (read_glasgow_norms, GLASGOW.replace("6.8,0.4", "n/a,0.4"), "line 3: no number in the IMAG M column"),
    (read_brysbaert_concreteness, BRYSBAERT.replace("\t", ","), "not Brysbaert et al.'s concreteness file"),
    (read_brysbaert_concreteness, BRYSBAERT.replace("1.45", "high"), "line 3: no number in the Conc.M column"),
])
def test_malformed_norms_give_a_one_line_error(tmp_path, reader, text, message):
    path = tmp_path / "norms.txt"
    path.write_text(text)
    with pytest.raises(NormsError, match=message) as error:
        reader(path)
    assert "\n" not in str(error.value)
    with pytest.raises(NormsError, match="missing.csv to read it: No such file or directory"):
        reader(tmp_path / "missing.csv")


def test_correlation_skips_and_counts_words_not_in_the_norms():
    norms = {"red": 6.5, "circle": 6.8, "fair": 3.0, "varga": 1.5}
    words = [("red", 1.0), ("circle", 0.8), (",", 5.0), ("fair", -0.2), ("zyx", 3.0), ("varga", -0.9), ("1", 2.0)]
    result = correlate_with_norms(words, norms)
    assert (result.n, result.missing) == (4, 1)  # "zyx" counted; "," and "1" are not words
    a, r = [1.0, 0.8, -0.2, -0.9], [6.5, 6.8, 3.0, 1.5]
    assert result.pearson == pytest.approx(stats.pearsonr(a, r)[0])
    assert result.spearman == pytest.approx(stats.spearmanr(a, r)[0])
    assert correlate_with_norms(words[:2], norms).pearson is None  # too few words for a correlation
    table = format_correlation_table([("IG", "descriptions", {"imageability": result})], ["imageability"])
    assert f"| IG | descriptions | {result.pearson:+.2f} | {result.spearman:+.2f} | 4 (1) |" in table


def run_attribute(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    attribute.add_commands(parser.add_subparsers())
    args = parser.parse_args(["attribute", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def files(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("attribute")
    save_clip(model, folder / "tiny.pt")
    Image.new("RGB", (40, 40), (200, 30, 30)).save(folder / "red.jpg")
    (folder / "glasgow.csv").write_text(GLASGOW)
    run = folder / "run"  # an IIT-DAS run folder, as train.py writes one for full fine-tuning
    run.mkdir()
    save_clip(model, run / "weights.pt")
    torch.manual_seed(0)
    torch.save({"rotation": Rotation(TINY.text_width).state_dict()}, run / "adapters.pt")
    (run / "config.json").write_text(json.dumps(dict(objective="iit-das", finetune="full", layer=1, intervention_size=32)))
    return folder


def test_attribute_command_on_one_pair(files, capsys):
    page = files / "out" / "page.html"
    argv = ["--weights", str(files / "tiny.pt"), "--image", str(files / "red.jpg"), "--steps", "8",
            "--text", "a red circle", "--text", "the Varga medallion", "--html", str(page), "--norms", str(files / "glasgow.csv")]
    assert run_attribute(argv) == 0
    out = capsys.readouterr().out
    assert "circle[" in out and "completeness (Eq. 6)" in out
    assert "| IG | texts |" in out and "concreteness (Glasgow CNC) r" in out
    html = page.read_text()
    assert "data:image/jpeg;base64," in html and "medallion" in html and "<table>" in html
    # Each row names its text; each word shows its value.
    assert "<span class='label'>text 1, IG</span>" in html and "<span class='label'>text 2, IG</span>" in html
    assert "text 2: C(im, text) = " in out
    assert re.search(r">circle<small>[+-]\d\.\d{3}</small>", html)


def test_attribute_command_mediated_needs_a_rotation(files, capsys):
    argv = ["--image", str(files / "red.jpg"), "--text", "a red circle", "--steps", "4", "--mediated"]
    with pytest.raises(ValueError, match="--mediated needs the DAS rotation"):
        run_attribute(["--weights", str(files / "tiny.pt"), *argv])
    assert run_attribute(["--run", str(files / "run"), "--step", "last", *argv]) == 0  # a hand-written run: last only
    assert "mediated IG |" in capsys.readouterr().out


def test_attribute_command_on_concadia_images(files, tmp_path, capsys):
    world = make_toy_world(tmp_path / "toy", seed=0, n_articles=12, transfer_per_class=3)
    argv = ["--weights", str(files / "tiny.pt"), "--data", str(world / "concadia"), "--limit", "2", "--steps", "4",
            "--norms", str(world / "norms" / "glasgow_norms.csv")]
    assert run_attribute(argv) == 0
    out = capsys.readouterr().out
    assert out.count("description: C(im, text)") == 2 and out.count("caption: C(im, text)") == 2
    assert "| IG | descriptions |" in out and "| IG | captions |" in out


def test_attribute_command_refuses_half_a_pair():
    with pytest.raises(ValueError, match="--text and --image go together"):
        run_attribute(["--text", "a red circle"])


def test_default_step_count_is_documented():
    assert f"{DEFAULT_STEPS} points" in attribution.__doc__
