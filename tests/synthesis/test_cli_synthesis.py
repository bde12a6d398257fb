"""``daenr synthesize`` and ``daenr predict`` end to end (the cli's main, in process)."""
import numpy as np
import pytest

from daenr_fast.cli import main

FAST = ["--steps", "2", "--restarts", "1", "--no-progress"]


def test_synthesize_then_predict_its_images(run_dirs, tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["synthesize", str(run_dirs["cae-fr"]), "--neurons", "0,2", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "CAE-FR2" in printed and "decoder beats natural true" in printed
    assert {p.name for p in out.iterdir()} == {"synthesis.npz", "synthesis.json", "synthesis.png"}
    responses = tmp_path / "r.npz"
    assert main(["predict", str(run_dirs["cae-fr"]), "--images", str(out / "synthesis.npz"),
                 "--out", str(responses)]) == 0
    assert "decoder_images: 2 images" in capsys.readouterr().out
    with np.load(out / "synthesis.npz") as syn, np.load(responses) as r:
        for m in ("natural", "decoder", "pixel"):
            own = r[f"{m}_predicted"][np.arange(2), syn["neurons"]]
            assert np.allclose(own, syn[f"{m}_predicted"], rtol=1e-4)
            assert np.allclose(r[f"{m}_true"][np.arange(2), syn["neurons"]], syn[f"{m}_true"], rtol=1e-5)


def test_target_objective_on_a_cnn_baseline(run_dirs, tmp_path, capsys):
    out = tmp_path / "cnn"
    assert main(["synthesize", str(run_dirs["cnn-fr"]), "--neurons", "4", "--objective", "target:2",
                 "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "objective target:2" in printed and "pixel" in printed and "decoder" not in printed


@pytest.mark.parametrize("model,args,message", [
    ("cae-fr", ["--neurons", "0,99"], "--neurons: unknown neuron 99"),
    ("cae-fr", ["--neurons", "a,b"], "--neurons must be comma-separated neuron indices"),
    ("cnn-fr", ["--neurons", "0", "--method", "decoder"], "--method decoder: "),
    ("cae-fr", ["--neurons", "0", "--objective", "target:x"], "--objective target:RATE needs a number"),
    ("cae-fr", ["--neurons", "0", "--steps", "0"], "--steps must be an integer >= 1"),
])
def test_synthesize_bad_input_exits_2_and_writes_nothing(run_dirs, tmp_path, capsys, model, args, message):
    out = tmp_path / "out"
    assert main(["synthesize", str(run_dirs[model]), "--out", str(out), *FAST, *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_run_folder_without_a_checkpoint(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["synthesize", str(empty), "--neurons", "0", *FAST]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing"), "--images", str(tmp_path / "x.npz")]) == 2
    assert "--images" in capsys.readouterr().err
    assert list(empty.iterdir()) == []


def test_predict_wrong_image_size(run_dirs, tmp_path, capsys):
    src = tmp_path / "imgs.npz"
    np.savez(src, test_images=np.zeros((3, 20, 20)))
    assert main(["predict", str(run_dirs["cnn-fr"]), "--images", str(src), "--out", str(tmp_path / "r.npz")]) == 2
    err = capsys.readouterr().err
    assert "--images" in err and "[test_images]: expected images of 31 x 31 pixels" in err
    assert not (tmp_path / "r.npz").exists()
