from __future__ import annotations

import pytest

from assistant.safety.pii import find_pii, luhn_valid, redact_pii


@pytest.mark.parametrize(
    ("text", "expected", "kinds"),
    [
        ("mail me at jo.doe+shop@example.co.uk", "mail me at [EMAIL]", ["email"]),
        ("call (415) 555-0134 after six", "call [PHONE] after six", ["phone"]),
        ("my number is 415.555.0134", "my number is [PHONE]", ["phone"]),
        ("text +1 415 555 0134", "text [PHONE]", ["phone"]),
        ("uk office +44 20 7946 0958", "uk office [PHONE]", ["phone"]),
        ("card 4111 1111 1111 1111 exp 12/27", "card [CARD] exp 12/27", ["card"]),
        ("pay with 5500-0000-0000-0004", "pay with [CARD]", ["card"]),
        ("amex 378282246310005 please", "amex [CARD] please", ["card"]),
        ("ship it to 221 Baker Street, Apt 4B tomorrow", "ship it to [ADDRESS] tomorrow", ["address"]),
        ("I live at 1600 Pennsylvania Ave NW", "I live at [ADDRESS]", ["address"]),
        ("ssn 123-45-6789", "ssn [SSN]", ["ssn"]),
        (
            "I'm at 12 Oak Lane, jo@example.com, 415-555-0134",
            "I'm at [ADDRESS], [EMAIL], [PHONE]",
            ["address", "email", "phone"],
        ),
    ],
)
def test_redacts(text: str, expected: str, kinds: list[str]) -> None:
    assert redact_pii(text) == (expected, kinds)


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 please",  # 16 digits, Luhn fails: not a card
        "1234567812345678",
        "where is order ST-10423",
        "order 10423 for 3 items",
        "tracking number 1Z999AA10123456784",
        "FedEx tracking 741949871888",
        "I want 2 Large Hoodies in size 10",
        "my zip code is 94110",
        "under 50 dollars, size 9.5",
        "the 3 Main Colors are red, blue and green",
        "it was $1,299.99 on 11/24/2026",
    ],
)
def test_leaves_non_pii_alone(text: str) -> None:
    assert redact_pii(text) == (text, [])


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("41111x")


def test_card_is_not_also_a_phone() -> None:
    spans = find_pii("4111-1111-1111-1111")
    assert [s.kind for s in spans] == ["card"]


def test_allow_keeps_published_contacts() -> None:
    text = "Email support@shoptalk.example or call 1-800-555-0199."
    assert redact_pii(text, allow=["support@shoptalk.example", "1-800-555-0199"]) == (text, [])
    assert redact_pii(text)[1] == ["email", "phone"]


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown PII kinds"):
        redact_pii("x", kinds=["passport"])
