"""The package logger: ``logging.getLogger("scmulan")``; the root logger is never configured."""

import logging

logger = logging.getLogger("scmulan")
