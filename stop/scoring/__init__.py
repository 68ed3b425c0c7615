"""What scores programs: utilities (utility.py), downstream tasks (task.py), the
meta-utility that scores improvers (meta.py), and the static audit of a source (audit.py)."""
