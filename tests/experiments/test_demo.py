"""The demo on a tiny data set: both rows, the gradient share, the difference line and the figure."""
from daenr_fast.experiments.demo import DEMO, comparison_table, difference_line, run_demo


def test_demo_reports_the_difference_and_the_gradient_share(tiny_data, tmp_path):
    protocol = DEMO.with_overrides(max_steps=4, eval_every=2, batch_size=8)
    result = run_demo(tmp_path, data=tiny_data, protocol=protocol, jobs=1, log=lambda line: None)
    cae, fr = result["rows"]
    assert (cae["model"], fr["model"]) == ("cae", "cae-fr")
    assert cae["grad_share_response"] in (None, "") and 0 < float(fr["grad_share_response"]) < 1
    lines = result["table"].splitlines()
    assert "response share of encoder gradient" in lines[0]
    assert lines[2].startswith("CAE ") and lines[2].rstrip().endswith("n/a")
    assert lines[3].rstrip().endswith(f"{float(fr['grad_share_response']):.3f}")
    mse = float(fr["mse"]) - float(cae["mse"])
    assert result["difference"].startswith(f"CAE-FR2 - CAE: MSE {mse:+.4f}, PSNR ")
    assert f"sent {float(fr['grad_share_response']):.0%} of the gradient" in result["difference"]
    assert result["figure"].stat().st_size > 0


def test_the_difference_needs_both_models():
    row = {"model": "cae", "label": "CAE", "mse": "0.1", "psnr": "10", "ssim": "0.5", "grad_share_response": ""}
    assert difference_line([row]) is None
    assert comparison_table([row]).splitlines()[2].rstrip().endswith("n/a")


def test_the_demo_protocol_trains_at_the_paper_batch_size_and_scaling():
    assert (DEMO.batch_size, DEMO.max_steps, DEMO.recon_reduction, DEMO.response_reduction) == (
        64, 2000, "mean", "sum")
    assert DEMO.max_steps % DEMO.eval_every == 0        # the last step is evaluated (and its share measured)
