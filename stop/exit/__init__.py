"""Expert iteration (ExIt) on the Little Man Computer, after seeds/exit-lmc-paper.txt.

The core loop is `stop.exit.loop.run_exit`; search lives in search.py (sampling &
filtering) and mcts.py (Gumbel MCTS). torch is imported only by the submodules.
"""
