"""dwnotify: announce DataWorks deployment pipeline runs in DingTalk and Slack."""

__version__ = "0.1.0"
