"""Loading, checking, wrapping (LoRA) and saving Hugging Face causal LMs; tiny models for tests/demo."""
