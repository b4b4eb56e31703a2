"""mmusim: a pure-Python laboratory for stack memory protection on paged x86."""

__version__ = "0.1.0"
