"""What the Crossbar router loads: authentication, authorization and the router-side components.

Runs under Twisted inside the router process; `.crossbar/config.json` names
these classes. Never imports the asyncio client (`publisher/`) or Celery.
"""
