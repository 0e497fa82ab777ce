"""The chat side of learnloop: model loading, generation backend, LangGraph agent, CLI."""
