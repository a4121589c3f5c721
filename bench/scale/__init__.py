"""Scale and latency benchmarks: codyd beside supervisord and circus, measured in one run.

``python -m bench.scale.run`` runs every workload; ``python -m bench.scale.load`` is the
separate 60-second load test. See ``bench/README.md``.
"""
