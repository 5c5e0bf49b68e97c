"""Sender authentication, pure: DKIM, DomainKeys, keys, Authentication-Results.

Imports only `quailmail.core`; DNS comes in as a `Resolver`, time as a `Clock`.
"""
