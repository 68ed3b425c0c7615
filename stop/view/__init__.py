"""Views of saved runs: the run table, the lineage tree, sources and diffs, the terminal
UI and the HTML export."""
