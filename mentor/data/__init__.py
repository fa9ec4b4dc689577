"""Data: prompt and SFT-example files, their encoding with the model's tokenizer, and a resumable stream."""
