"""Remove personal data and secrets from text before it becomes training data.

A fine-tuned model can repeat what it was trained on, so what people typed loses its emails,
phone numbers, card numbers (Luhn-checked), IBANs (checksum-checked), IP addresses, user
mentions and credentials, each replaced with a placeholder. Text that also appears in the
documents the answer was given is kept as written: a contact address the handbook gives is the
right answer, not "[email]". Patterns lean towards false positives for secrets and towards false
negatives for phone numbers (dates, amounts and ids must survive).
"""

from __future__ import annotations

import re

# \w is Unicode: jürgen.müller@bücher.de and 用户@例子.广告 are addresses too. The TLD is letters only.
EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}\b")

# Credentials by their well-known prefixes, then `key = value` style assignments.
SECRETS = [
    # Slack tokens of every kind (xoxb, xoxp, xoxa, xoxc, xoxd, xoxe, …) and rotated ones (xoxe.xoxp-…).
    re.compile(r"\bxox[a-z](?:\.xox[a-z])?-[A-Za-z0-9%-]{6,}"),
    re.compile(r"\bxapp-[A-Za-z0-9-]{6,}"),  # Slack app tokens
    re.compile(r"https?://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]+"),  # Slack webhooks
    re.compile(r"\b(?:sk|pk|rk)-(?:live-|test-|proj-)?[A-Za-z0-9_-]{16,}"),  # OpenAI / Stripe style
    re.compile(r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}"),  # Stripe
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"),  # GitLab
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id, long-lived and temporary
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),  # Google API key
    re.compile(r"\bhf_[A-Za-z0-9]{30,}"),  # Hugging Face
    re.compile(r"\bnpm_[A-Za-z0-9]{36}\b"),  # npm
    # Discord bot token: the base64 of the bot's id (M…, N…, O…), a timestamp, an HMAC.
    re.compile(r"\b[MNO][A-Za-z0-9_-]{23,25}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,38}(?![\w-])"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),  # JWT
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{16,}=*"),
    # A pasted key often lacks its END line: then up to the next blank line, or the end of the text.
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:.*?-----END [A-Z ]*PRIVATE KEY-----|.*?(?=\n[ \t]*\n)|.*)", re.S),
]
# `name = value` where the name says credential: api_key, SLACK_BOT_TOKEN, db.password,
# aws_secret_access_key, signing-key (a bare "key" needs a prefix: "monkey: ..." is no secret).
SECRET_NAME = (
    r"(?:[A-Za-z0-9]+[_.-])*(?:api[_ -]?key|access[_ -]?key|secret|token|password|passwd|pwd|credentials?)"
    r"|(?:[A-Za-z0-9]+[_.-])+key"
)
ASSIGNMENT = re.compile(rf"(?i)\b((?:{SECRET_NAME})s?\s*[:=]\s*)([\"']?)[^\s\"',;]{{6,}}\2")
# Passwords, however short, also as people say them: "my password is hunter2", "pw=x9y8", "the wifi
# password is 'blue sky 7'". Not a word that follows "password is"/"password:" in prose ("stored", "at").
PASSWORD = re.compile(
    r"(?i)\b((?:[A-Za-z0-9]+[_.-])*(?:password|passwort|passwd|passphrase|passcode|pwd|pw)s?"
    r"(?:\s+(?:is|was)(?:\s+now)?(?:\s*:)?\s+|\s*[:=]\s*))"
    r"(?!(?:the|a|an|not|never|still|also|only|too|being|stored|kept|saved|set|reset|changed|rotated|required|"
    r"needed|sent|shared|valid|invalid|expired|wrong|correct|incorrect|missing|empty|optional|case|in|on|at|for|"
    r"to|your|my|our|their|same|different)\b)"
    r"(?:\"[^\"\n]+\"|'[^'\n]+'|[^\s\"',;]*[^\s\"',;.!?:)])"
)

# Slack (<@U…>, <@W…>) and Discord (<@123…>, <@!123…>) user mentions.
MENTION = re.compile(r"<@!?(?:[UW][A-Z0-9]{6,}|\d{15,21})(?:\|[^>]*)?>")
# Not after a +: +4915112345678 is a phone number, whatever Luhn says.
CARD = re.compile(r"(?<![\w+-])\d(?:[ -]?\d){12,18}(?![\w-])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = re.compile(rf"(?<![\w.]){OCTET}(?:\.{OCTET}){{3}}(?![\w.])")
HEX = r"[0-9a-fA-F]{1,4}"
IPV6 = re.compile(rf"(?<![\w:])(?:(?:{HEX}:){{7}}{HEX}|(?:{HEX}:){{1,6}}:(?:{HEX}(?::{HEX}){{0,5}})?|::(?:{HEX}(?::{HEX}){{0,6}}))(?![\w:])")

# Phone numbers: optional +country code (and a one-digit area code: +33 6 …), then groups separated by
# space/dot/dash/parentheses; or + and the digits unseparated (E.164: +4915112345678).
PHONE = re.compile(
    r"(?<![\w+])(?:(?:\+\d{1,3}(?:[\s.-]\d)?[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}"
    r"|\+\d{1,3}[\s.-]?\d{4,12})(?![\w-])"
)
# The French way: ten digits in pairs, 06 12 34 56 78 (a leading 0, so not a list like 10 20 30 40 50).
PAIRS = re.compile(r"0[1-9](?:([\s.-])\d\d)(?:\1\d\d){3}")
DATE_LIKE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")


def _phone(match: re.Match) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    if digits < 7 or digits > 15 or DATE_LIKE.match(text):
        return text
    # Without a + or parentheses, require at least one separator-delimited group of 3+ digits
    # at the end, as phone numbers have; "10 20 30" is a list, not a number.
    if not text.startswith(("+", "(")) and len(re.split(r"[\s.()-]+", text)[-1]) < 3 and not PAIRS.fullmatch(text):
        return text
    return "[phone]"


def _luhn(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _card(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[card]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group(0)


def _iban(match: re.Match) -> str:
    compact = match.group(0).replace(" ", "")
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return "[iban]" if 15 <= len(compact) <= 34 and int(number) % 97 == 1 else match.group(0)


def scrub(text: str, keep: str = "") -> str:
    """`text` with personal data and credentials replaced by placeholders, except where the
    matched text also appears in `keep` (the documents the answer was given)."""
    if not text:
        return text

    def unless_kept(replace):
        def sub(match: re.Match) -> str:
            if keep and match.group(0) in keep:
                return match.group(0)
            return replace(match) if callable(replace) else replace
        return sub

    for pattern in SECRETS:
        text = pattern.sub(unless_kept("[secret]"), text)
    text = PASSWORD.sub(unless_kept(lambda m: m.group(1) + "[secret]"), text)
    text = ASSIGNMENT.sub(unless_kept(lambda m: m.group(1) + "[secret]"), text)
    text = MENTION.sub(unless_kept("@someone"), text)
    text = EMAIL.sub(unless_kept("[email]"), text)
    text = IBAN.sub(unless_kept(_iban), text)
    text = CARD.sub(unless_kept(_card), text)
    text = IPV4.sub(unless_kept("[ip]"), text)
    text = IPV6.sub(unless_kept("[ip]"), text)
    return PHONE.sub(unless_kept(_phone), text)
