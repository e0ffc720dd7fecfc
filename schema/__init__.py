"""The numbered migrations, installed as cardd.schema (setup.cfg maps this directory into the package)."""
