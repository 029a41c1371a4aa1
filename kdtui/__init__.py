"""kdtui: a terminal experiment manager for knowledge-distillation research."""
