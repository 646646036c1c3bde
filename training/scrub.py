"""Remove personal data and secrets from text before it becomes training data.

A fine-tuned model can repeat what it was trained on, so emails, phone numbers and
credentials are replaced with placeholders. Patterns lean towards false positives for
secrets and towards false negatives for phone numbers (dates, amounts and ids must survive).
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")

# Credentials by their well-known prefixes, then `key = value` style assignments.
SECRETS = [
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{6,}"),  # Slack bot/user tokens
    re.compile(r"\bxapp-[A-Za-z0-9-]{6,}"),  # Slack app tokens
    re.compile(r"\b(?:sk|pk|rk)-(?:live-|test-|proj-)?[A-Za-z0-9_-]{16,}"),  # OpenAI / Stripe style
    re.compile(r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}"),  # Stripe
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"),  # GitLab
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),  # Google API key
    re.compile(r"\bhf_[A-Za-z0-9]{30,}"),  # Hugging Face
    re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),  # JWT
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{16,}=*"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
]
ASSIGNMENT = re.compile(
    r"(?i)\b((?:api[_ -]?key|access[_ -]?key|secret|token|password|passwd|pwd)s?\s*[:=]\s*)"
    r"([\"']?)[^\s\"',;]{6,}\2"
)

# Phone numbers: optional +country code, then groups separated by space/dot/dash/parentheses.
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}(?![\w-])")
DATE_LIKE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")


def _phone(match: re.Match) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    if digits < 7 or digits > 15 or DATE_LIKE.match(text):
        return text
    # Without a + or parentheses, require at least one separator-delimited group of 3+ digits
    # at the end, as phone numbers have; "10 20 30" is a list, not a number.
    if not text.startswith(("+", "(")) and len(re.split(r"[\s.()-]+", text)[-1]) < 3:
        return text
    return "[phone]"


def scrub(text: str) -> str:
    """`text` with emails, phone numbers and credentials replaced by placeholders."""
    if not text:
        return text
    for pattern in SECRETS:
        text = pattern.sub("[secret]", text)
    text = ASSIGNMENT.sub(lambda m: m.group(1) + "[secret]", text)
    text = EMAIL.sub("[email]", text)
    return PHONE.sub(_phone, text)
