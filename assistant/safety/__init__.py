"""Moderation of what shoppers say (`moderation`, its examples in `moderation_data`) and PII redaction (`pii`)."""
