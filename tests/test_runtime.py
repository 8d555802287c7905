"""What every rule script does first: `runtime.start_job`."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_failing_job_leaves_its_traceback_in_its_log_and_on_stderr(tmp_path):
    log = tmp_path / "job.log"
    script = (
        "from crosscoder_interventions.runtime import start_job\n"
        f"log = start_job({str(log)!r}, threads=1, seed=0)\n"
        "log.info('started')\n"
        "raise ValueError('the input table has no rows')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO / "workflow", timeout=120)
    assert result.returncode == 1
    text = log.read_text()
    assert "INFO started" in text
    assert "CRITICAL the job failed" in text and "ValueError: the input table has no rows" in text
    assert "Traceback" in result.stderr and "ValueError: the input table has no rows" in result.stderr
