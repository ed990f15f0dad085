"""Shared kernel: settings, database, errors, bus, auth, audit, module contract.

The kernel imports no context; contexts import the kernel.
"""
