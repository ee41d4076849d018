"""Negative-sentiment spike alerts: aggregation, detection, lifecycle and notification.

Pure logic lives in ``alerts.detector`` and ``alerts.rules``; I/O lives in
``alerts.notifiers`` (HTTP/SMTP), ``storage.alerts`` (all SQL) and ``alerts.service`` (the loop).
"""
