"""``learnloop bench``: a simulated user teaches the agent a labelled task, measured."""
