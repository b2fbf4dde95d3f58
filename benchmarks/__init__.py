"""Speed measures of every stage, each line against a reference run in the same process.

`python -m benchmarks` runs them all (benchmarks/cli.py); one module per measured stage:
`composite` (prep: median compositing, gap filling), `data` (the input pipeline), `train`
(the train step against its PyTorch twin, `torch_twin`), `predict` (whole-zone prediction), `stac` (a zone-year through the STAC route against
the local route, on a loopback catalogue).
"""
