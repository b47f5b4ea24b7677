"""querylog's benchmarks: each module measures one group of figures for ``querylog bench``."""
