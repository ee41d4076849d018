"""``marketmood demo``: the whole pipeline on the embedded broker and database, with a generated news feed.

Application orchestration (child worker process, alert service, live terminal view), so it lives in the
composition root; ``run_demo`` is its entry point.
"""

from marketmood.demo.run import run_demo

__all__ = ["run_demo"]
