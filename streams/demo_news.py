"""A synthetic financial news stream the project writes itself (the demo needs no external data).

Headlines come from templates written for MarketMood, filled with fictional-but-plausible numbers for real
company names, across several topics. The stream has three phases (fractions of the stream, so with a
constant publishing rate they are periods of time):

1. **calm** (``0 .. burst_start``): every topic at its usual mix, ~15% negative headlines: the baseline;
2. **burst** (``burst_start .. burst_end``): one story dominates: ``burst_company`` (Exxon Mobil, XOM) and
   the oil market turn sharply negative ("... plunges after ...", "... warns of heavy losses"), in the
   ``burst_topic`` (Energy | Oil) with the company's ticker, so a topic alert and a ticker alert fire;
3. **recovery** (``burst_end .. end``): calm again, long enough for the alert to resolve.

``DemoStream.scenario(rate, calm_s, burst_s, recovery_s)`` builds the stream for a timed demo. Every
headline of one stream is a distinct story (checked with the syndication key), so none is discarded as a
syndicated copy; the run id is part of the random seed, so a second demo on the same database writes new
stories too. Deterministic for a given seed and run id.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from streams.novelty import story_key

COMPANIES: tuple[tuple[str, str], ...] = (
    ("Apple", "AAPL"), ("Microsoft", "MSFT"), ("Amazon", "AMZN"), ("Tesla", "TSLA"), ("Exxon Mobil", "XOM"),
    ("Chevron", "CVX"), ("JPMorgan", "JPM"), ("Goldman Sachs", "GS"), ("Pfizer", "PFE"), ("Nvidia", "NVDA"),
    ("Boeing", "BA"), ("Walmart", "WMT"), ("Netflix", "NFLX"), ("Intel", "INTC"), ("Bank of America", "BAC"),
)
ENERGY = (("Exxon Mobil", "XOM"), ("Chevron", "CVX"), ("BP", "BP"), ("Shell", "SHEL"))
SITES = ("Baytown", "Beaumont", "Gulf of Mexico", "Permian Basin", "North Sea", "Singapore", "Rotterdam",
         "Guyana", "Alberta", "Louisiana", "Texas", "Qatar")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")

# topic -> (neutral/positive templates, negative templates). Slots: {co} company, {pct} a percentage with
# one decimal, {bn} billions, {n} a count, {q} quarter, {site} a place, {month}, {usd} an oil price.
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Earnings": (
        ("{co} quarterly profit beats estimates as revenue rises {pct}%",
         "{co} raises full-year guidance after strong Q{q}",
         "{co} reports Q{q} earnings in line with expectations, revenue up {pct}%",
         "{co} Q{q} sales grow {pct}% on steady demand",
         "{co} posts record Q{q} revenue of ${bn} billion"),
        ("{co} misses Q{q} profit estimates as costs climb {pct}%",
         "{co} cuts full-year outlook after weak Q{q}, revenue down {pct}%"),
    ),
    "Energy | Oil": (
        ("Oil edges up {pct}% as inventories fall", "Brent steady ahead of OPEC meeting in {month}",
         "{co} signs ${bn} billion LNG supply deal with {site} buyers",
         "Oil holds near ${usd} a barrel as traders await {month} data",
         "{co} refinery in {site} returns to full capacity", "{co} to invest ${bn} billion in {site} oil field",
         "{co} oil production up {pct}% at {site}", "Oil prices rise {pct}% on strong demand",
         "OPEC keeps output steady for {month}, sees demand up {pct}%"),
        ("Oil slips {pct}% on demand worries", "{co} delays {site} project by {n} months"),
    ),
    "Fed | Central Banks": (
        ("Fed holds rates steady in {month}, signals patience",
         "ECB keeps policy unchanged as inflation eases to {pct}%",
         "Fed minutes show officials comfortable with {pct}% policy rate",
         "Bank of England keeps rates on hold in {month}"),
        ("Central bank warns inflation could stay near {pct}% through {month}",),
    ),
    "M&A | Investments": (
        ("{co} agrees to buy rival in ${bn} billion deal", "{co} invests ${bn} billion in new {site} plant",
         "{co} takes {pct}% stake in startup", "{co} completes ${bn} billion acquisition ahead of schedule"),
        ("{co} deal for ${bn} billion target faces regulatory delay",),
    ),
    "Stock Movement": (
        ("{co} shares rise {pct}% in early trading", "{co} stock hits record high, up {pct}% this month",
         "{co} shares edge {pct}% higher after upgrade", "{co} stock gains {pct}% on analyst optimism"),
        ("{co} shares fall {pct}% after downgrade",),
    ),
    "Legal | Regulation": (
        ("{co} settles patent dispute for ${bn} billion", "Regulators approve {co} product launch in {month}",
         "{co} wins appeal in {site} court", "{co} reaches agreement with regulators over {site} review"),
        ("{co} faces probe over {site} sales practices",),
    ),
    "Dividend": (
        ("{co} raises quarterly dividend by {pct}%", "{co} announces ${bn} billion share buyback",
         "{co} declares regular dividend, yield at {pct}%", "{co} extends buyback by ${bn} billion"),
        ("{co} holds dividend flat as cash flow dips {pct}%",),
    ),
}

# The burst: one unmistakably bad story about ``burst_company``'s oil business (worded so that a sentiment
# model reads it as negative and a topic model as oil news).
BURST_NEGATIVE: tuple[str, ...] = (
    "Oil prices plunge {pct}% as {co} refinery blast rattles crude markets",
    "Crude oil crashes {pct}% after {co} {site} refinery explosion",
    "{co} oil output collapses {pct}% after {site} refinery fire",
    "Oil and gas stocks sink as {co} warns of heavy losses from {site} blast",
    "{co} refinery disaster sends oil prices tumbling {pct}%",
    "{co} shuts {site} oil refinery after deadly explosion, {n} workers hurt",
    "{co} oil spill at {site} spreads, cleanup costs soar to ${bn} billion",
    "{co} slashes oil production forecast by {pct}% after {site} disaster",
    "{co} crude shipments halted for {n} days as {site} terminal burns",
    "{co} gasoline output plunges {pct}% after {site} refinery blast",
    "Energy sector sinks {pct}% as {co} refinery crisis deepens",
    "{co} warns of heavy losses as oil refinery outage drags on for {n} days",
    "{co} fuel supply crisis worsens after {site} refinery explosion",
    "{co} warns of heavy losses as oil price collapses {pct}%",
    "Oil prices crash {pct}% as {co} {site} disaster shuts down supply",
)


@dataclass(frozen=True)
class DemoStream:
    n_articles: int = 600
    seed: int = 7
    run_id: str = "0"  # part of every id and of the random seed: a second run on the same database adds new stories
    burst_topic: str = "Energy | Oil"
    burst_company: tuple[str, str] = ("Exxon Mobil", "XOM")
    burst_start: float = 0.45
    burst_end: float = 0.70
    negative_share: float = 0.15  # outside the burst
    burst_negative_share: float = 0.9  # of the burst story's headlines
    burst_topic_weight: float = 0.6  # share of articles that belong to the burst story during the burst
    calm_topic_weight: float = 0.2  # share of the burst topic in calm periods (it needs a baseline too)

    @classmethod
    def scenario(cls, rate: float, calm_s: float, burst_s: float, recovery_s: float, **kwargs: Any) -> DemoStream:
        """A stream for a timed demo: ``calm_s`` seconds of baseline, a ``burst_s`` burst, then
        ``recovery_s`` calm seconds, when published at ``rate`` articles per second."""
        total = calm_s + burst_s + recovery_s
        if rate <= 0 or total <= 0:
            raise ValueError("rate and the scenario's length must be positive")
        return cls(n_articles=max(1, round(rate * total)), burst_start=calm_s / total,
                   burst_end=(calm_s + burst_s) / total, **kwargs)

    def in_burst(self, i: int) -> bool:
        return self.burst_start * self.n_articles <= i < self.burst_end * self.n_articles

    def phase(self, i: int) -> str:
        """``calm``, ``burst`` or ``recovery`` for article ``i``."""
        if i < self.burst_start * self.n_articles:
            return "calm"
        return "burst" if self.in_burst(i) else "recovery"

    def _fill(self, rng: random.Random, template: str, company: str) -> str:
        return template.format(co=company, pct=f"{rng.uniform(0.5, 19.9):.1f}", bn=f"{rng.uniform(1, 40):.1f}",
                               n=rng.randint(2, 30), q=rng.randint(1, 4), site=rng.choice(SITES),
                               month=rng.choice(MONTHS), usd=rng.randint(62, 94))

    def _headline(self, rng: random.Random, i: int) -> tuple[str, str, str]:
        """(title, company, ticker) of article ``i``."""
        topics = list(TEMPLATES)
        if self.in_burst(i) and rng.random() < self.burst_topic_weight:
            company, ticker = self.burst_company
            pool = BURST_NEGATIVE if rng.random() < self.burst_negative_share else TEMPLATES[self.burst_topic][0]
            return self._fill(rng, rng.choice(pool), company), company, ticker
        if rng.random() < self.calm_topic_weight:
            topic = self.burst_topic
        else:
            topic = rng.choice([t for t in topics if t != self.burst_topic])
        company, ticker = rng.choice(ENERGY if topic == self.burst_topic else COMPANIES)
        pool = TEMPLATES[topic][1 if rng.random() < self.negative_share else 0]
        return self._fill(rng, rng.choice(pool), company), company, ticker

    def articles(self, now: Any = None) -> Iterator[dict[str, Any]]:
        """Contract messages; ``published_at`` is ``now()`` if given, else the wall clock at generation (a live
        feed: the publisher paces generation, so the time is when the article goes out)."""
        rng = random.Random(f"{self.seed}/{self.run_id}")
        seen: set[str] = set()
        for i in range(self.n_articles):
            for _ in range(50):  # distinct stories only: a repeated headline would count as a syndicated copy
                title, company, ticker = self._headline(rng, i)
                if story_key(title) not in seen:
                    break
            seen.add(story_key(title))
            stamp = (now() if callable(now) else datetime.now(timezone.utc)).isoformat()
            yield {
                "id": f"demo-{self.run_id}-{i}",
                "title": title,
                "summary": f"MarketMood demo article {i} about {company}.",
                "source": "MarketMood demo",
                "url": f"https://marketmood.invalid/demo/{self.run_id}/{i}",
                "published_at": stamp,
                "tickers": [ticker],
                "lang": "en",
            }
