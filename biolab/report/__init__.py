"""The report: finished numbers beside the paper's, read from stage folders, never recomputed."""
