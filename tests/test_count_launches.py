"""tools/count_launches.py: kernel launches and autograd nodes of a model and of one block."""
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import count_launches  # noqa: E402


def test_counts_a_model_and_its_first_mixer(capsys, monkeypatch):
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "reference")  # the tool sets it: restored after the test
    count_launches.main(["--model", "vmamba_tiny", "--model-kwargs", "dims=(16,32,32,32)", "depths=(1,1,1,1)",
                         "--img-size", "32", "-b", "1", "--device", "cpu", "--backend", "triton", "--top", "30"])
    out = capsys.readouterr().out
    model, mixer = re.findall(r"forward +(\d+) dispatched \((\d+) Triton\) \| train step +(\d+) dispatched "
                              r"\((\d+) Triton\), (\d+) autograd nodes", out)
    # the fused mixer: the conv + SiLU, one scan and its fused norm forward; backward adds the scan, norm,
    # projection, merge kernels and the conv's two (SiLU's gradient, then dx and the parameters' gradients)
    assert mixer[1:2] == ("3",) and mixer[3] == "9"
    assert int(model[0]) > int(mixer[0]) and int(model[2]) > int(model[0]) and int(model[4]) > int(mixer[4]) > 0
    assert "triton.scan_fwd_kernel" in out
