"""Phone numbers as Relay takes them: E.164, checked with Google's libphonenumber
(the `phonenumbers` package) before anything is queued or sent."""

from __future__ import annotations

import re

import phonenumbers

# What a written number may contain besides digits. Letters are refused outright:
# libphonenumber would read a vanity number ("+1 800 FLOWERS") as digits.
_ALLOWED = re.compile(r"\+[0-9 ().\-]+")
_MAX_LENGTH = 32


def to_e164(value: str) -> str:
    """`value` as an E.164 number (`+14155550123`), or ValueError.

    Strict: the number must start with `+` and its country code (no region is guessed),
    carry no extension, and be a valid number for its region. The error never repeats
    the number, so it is safe to log and to return to a caller.
    """
    if not isinstance(value, str):
        raise ValueError("a phone number must be a string")
    text = value.strip()
    if not text.startswith("+"):
        raise ValueError(
            "a phone number must be in E.164 form, starting with + and its country code"
        )
    if len(text) > _MAX_LENGTH or not _ALLOWED.fullmatch(text):
        raise ValueError(
            "a phone number may contain only +, digits, spaces, dots, dashes and brackets"
        )
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number") from None
    if number.extension or not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
