"""Pretraining (BIO or mixed BIO+QA) and, later, QA finetuning."""
