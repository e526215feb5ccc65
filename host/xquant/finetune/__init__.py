"""Optional fine-tuning passes selected by ``finetune_level`` (torch is imported only in here)."""
