"""The analysis: feature discovery, top examples, the experiment's sweeps, scoring, statistics, comparison, findings, figures."""
