"""`python -m prep.bench` on a small zone: its lines, their fields and the identity check."""
import json

from prep import bench


def test_prep_bench_lines(capsys):
  rc = bench.main(["--size", "64", "--repeats", "1", "--gap-repeats", "1"])
  lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
  assert rc == 0
  assert [l["name"] for l in lines] == ["composite_median", "gap_fill"]
  for l in lines:
    assert l["identical"] is True
    # The ratio comes from the unrounded times (a 64-px zone takes ~0.1 ms, below the
    # 4 decimals printed), so only its sign is checked here.
    assert l["ratio"] > 0 and l["reference_s"] > 0
  assert [l["target_ratio"] for l in lines] == [10.0, 500.0]
  assert lines[1]["reference_timed_pixels"] == 64 * 64        # sample capped at the zone
