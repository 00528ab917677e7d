"""What a shopper (and their friends) did with products: the memory writes it, the ranker and dialogue read it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SessionSignals:
    """What one shopper (and their friends) did with products: ids, friend counts, recency.

    Attributes:
        viewed, liked, bought, disliked: Product ids (parents).
        friends_bought, friends_liked: Product id -> how many friends did so.
        recency: Product id -> decay of the shopper's last interaction, 1 = just now, 0 = long ago.
    """

    viewed: set[str] = field(default_factory=set)
    liked: set[str] = field(default_factory=set)
    bought: set[str] = field(default_factory=set)
    disliked: set[str] = field(default_factory=set)
    friends_bought: dict[str, int] = field(default_factory=dict)
    friends_liked: dict[str, int] = field(default_factory=dict)
    recency: dict[str, float] = field(default_factory=dict)
