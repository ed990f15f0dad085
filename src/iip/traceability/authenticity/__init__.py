"""Anti-counterfeit codes: serialised GS1 Digital Links signed with the tenant's Ed25519 key, and their verification."""
