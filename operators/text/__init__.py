"""Text: cleaning, quality, interleaved documents, LLM caption rewriting."""
