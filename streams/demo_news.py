"""A synthetic financial news stream the project writes itself (the demo needs no external data).

Headlines come from templates written for MarketMood, filled with fictional-but-plausible companies and
numbers, across several topics. Partway through (``burst_start``..``burst_end`` as fractions of the
stream) one topic turns sharply negative, so the live summary and the spike alerts have something to show.
Deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

COMPANIES: tuple[tuple[str, str], ...] = (
    ("Apple", "AAPL"), ("Microsoft", "MSFT"), ("Amazon", "AMZN"), ("Tesla", "TSLA"), ("Exxon Mobil", "XOM"),
    ("Chevron", "CVX"), ("JPMorgan", "JPM"), ("Goldman Sachs", "GS"), ("Pfizer", "PFE"), ("Nvidia", "NVDA"),
    ("Boeing", "BA"), ("Walmart", "WMT"), ("Netflix", "NFLX"), ("Intel", "INTC"), ("Bank of America", "BAC"),
)
ENERGY = (("Exxon Mobil", "XOM"), ("Chevron", "CVX"), ("BP", "BP"), ("Shell", "SHEL"))

# topic -> (neutral/positive templates, negative templates)
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Earnings": (
        ("{co} quarterly profit beats estimates as revenue rises {pct}%",
         "{co} raises full-year guidance after strong quarter",
         "{co} reports earnings in line with expectations"),
        ("{co} misses profit estimates as costs climb {pct}%",
         "{co} cuts full-year outlook, shares tumble"),
    ),
    "Energy | Oil": (
        ("Oil edges up as inventories fall {pct}%", "{co} boosts output at new offshore field",
         "Brent steady ahead of OPEC meeting"),
        ("Oil prices plunge {pct}% as demand fears deepen", "{co} shares slump after refinery fire halts output",
         "Crude crashes to multi-year low on supply glut", "{co} warns of steep loss as oil price collapses",
         "Energy stocks sink as OPEC talks break down"),
    ),
    "Fed | Central Banks": (
        ("Fed holds rates steady, signals patience", "ECB keeps policy unchanged as inflation eases"),
        ("Fed surprises markets with steep rate hike", "Central bank warns of prolonged downturn"),
    ),
    "M&A | Investments": (
        ("{co} agrees to buy rival in ${bn} billion deal", "{co} invests ${bn} billion in new plant"),
        ("{co} deal collapses after regulators object",),
    ),
    "Stock Movement": (
        ("{co} shares rise {pct}% in early trading", "{co} stock hits record high"),
        ("{co} shares fall {pct}% after downgrade",),
    ),
    "Legal | Regulation": (
        ("{co} settles patent dispute", "Regulators approve {co} product launch"),
        ("{co} fined ${bn} billion over antitrust violations", "{co} faces lawsuit over data breach"),
    ),
    "Dividend": (
        ("{co} raises quarterly dividend by {pct}%", "{co} announces ${bn} billion share buyback"),
        ("{co} suspends dividend to preserve cash",),
    ),
}


@dataclass(frozen=True)
class DemoStream:
    n_articles: int = 600
    seed: int = 7
    run_id: str = "0"  # part of every id, so a second demo run on the same database adds new articles
    burst_topic: str = "Energy | Oil"
    burst_start: float = 0.45
    burst_end: float = 0.70
    negative_share: float = 0.2  # outside the burst
    burst_negative_share: float = 0.9
    burst_topic_weight: float = 0.6  # share of articles in the burst topic during the burst

    def in_burst(self, i: int) -> bool:
        return self.burst_start * self.n_articles <= i < self.burst_end * self.n_articles

    def articles(self, now: Any = None) -> Iterator[dict[str, Any]]:
        """Contract messages; ``published_at`` is the wall clock at generation (a live feed)."""
        rng = random.Random(self.seed)
        topics = list(TEMPLATES)
        for i in range(self.n_articles):
            burst = self.in_burst(i)
            topic = self.burst_topic if burst and rng.random() < self.burst_topic_weight else rng.choice(topics)
            negative = rng.random() < (self.burst_negative_share if burst and topic == self.burst_topic
                                       else self.negative_share)
            pool = TEMPLATES[topic][1 if negative else 0]
            company, ticker = rng.choice(ENERGY if topic == self.burst_topic else COMPANIES)
            title = rng.choice(pool).format(co=company, pct=rng.randint(2, 18), bn=rng.randint(1, 40))
            stamp = (now() if callable(now) else datetime.now(timezone.utc)).isoformat()
            yield {
                "id": f"demo-{self.run_id}-{i}",
                "title": title,
                "summary": f"MarketMood demo article {i} about {company}.",
                "source": "MarketMood demo",
                "url": f"https://marketmood.invalid/demo/{self.seed}/{i}",
                "published_at": stamp,
                "tickers": [ticker],
                "lang": "en",
            }
