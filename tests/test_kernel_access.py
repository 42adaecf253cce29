"""torch.compile reads which arguments each Triton kernel writes from its IR: only the kernel's outputs.

Any input it takes for written is cloned before every launch in a compiled graph and copied back after (the
parameters too): ``tools/kernel_access.py`` asks PyTorch's own analysis about every kernel the families launch.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).parent.parent / "tools" / "kernel_access.py"

#: each kernel's outputs (scratch included): the only arguments it may be found to write
OUTPUTS = {
    "add_norm_fwd_kernel": {"s_ptr", "y_ptr", "stats_ptr"},
    "conv1d_bwd_kernel": {"dx_ptr", "dw_ptr", "db_ptr"},
    "conv1d_fwd_kernel": {"out_ptr"},
    "dwconv2d_bwd_kernel": {"dx_ptr", "dw_ptr", "db_ptr"},
    "dwconv2d_bwd_silu_kernel": {"g_ptr"},
    "dwconv2d_fwd_kernel": {"out_ptr"},
    "fusion_observe_bwd_kernel": {"dh_ptr", "dc_ptr", "du_ptr", "dd_ptr", "s_ptr"},
    "fusion_observe_fwd_kernel": {"y_ptr"},
    "merge_gate_bwd_kernel": {"dy_ptr", "dz_ptr"},
    "merge_gate_fwd_kernel": {"out_ptr", "ys_ptr"},
    "merge_kernel": {"y_ptr"},
    "merge_norm_bwd_kernel": {"dx_ptr", "dr_ptr", "dwb_ptr"},
    "merge_norm_fwd_kernel": {"y_ptr", "stats_ptr"},
    "observe_grad_kernel": {"g_ptr"},
    "observe_norm_gate_bwd_kernel": {"dh_ptr", "dc_ptr", "du_ptr", "dz_ptr", "part_ptr"},
    "observe_norm_gate_fwd_kernel": {"out_ptr", "stats_ptr"},
    "projection_grads_kernel": {"dlow_ptr", "dw_ptr"},
    "scan_bwd_kernel": {"scratch_ptr", "du_ptr", "ddt_ptr", "dA_ptr", "dB_ptr", "dC_ptr", "dD_ptr", "dbias_ptr",
                        "dz_ptr"},
    "scan_fwd_kernel": {"out_ptr", "last_ptr", "states_ptr", "ckpt_ptr", "seg_ptr"},
    "ssd_kv_kernel": {"kv_ptr"},
    "ssd_norm_bwd_kernel": {"dy_ptr", "dz_ptr", "dwb_ptr"},
    "ssd_out_kernel": {"y_ptr"},
    "ssd_out_norm_kernel": {"out_ptr", "stats_ptr"},
    "ssd_rows_bwd_kernel": {"dx_ptr", "ddt_ptr", "db_ptr", "dc_ptr", "part_ptr"},
    "state_fusion_bwd_kernel": {"dh_ptr", "dw_ptr", "dalpha_ptr"},
    "state_fusion_fwd_kernel": {"out_ptr"},
}


def test_compile_finds_only_each_kernels_outputs_written():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # Triton's IR, not the interpreter
    out = subprocess.run([sys.executable, str(TOOL), "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    launched = {row["kernel"] for row in rows}
    assert {"scan_fwd_kernel", "scan_bwd_kernel", "merge_norm_fwd_kernel", "state_fusion_fwd_kernel",
            "ssd_kv_kernel", "conv1d_fwd_kernel", "observe_norm_gate_fwd_kernel"} <= launched
    assert launched <= set(OUTPUTS), f"kernels without declared outputs: {sorted(launched - set(OUTPUTS))}"
    wrong = [(row["kernel"], row["flags"], sorted(set(row["writes"]) - OUTPUTS[row["kernel"]])) for row in rows
             if not set(row["writes"]) <= OUTPUTS[row["kernel"]]]
    assert not wrong, f"inputs taken for written (cloned and copied back under torch.compile): {wrong}"
    # the scan's summary pass writes its summaries only; each forward writes its output
    flags = [(row["flags"], set(row["writes"])) for row in rows if row["kernel"] == "scan_fwd_kernel"]
    assert any(f.get("SUMMARY") and w == {"seg_ptr"} for f, w in flags)
    assert any(not f.get("SUMMARY") and "out_ptr" in w for f, w in flags)
