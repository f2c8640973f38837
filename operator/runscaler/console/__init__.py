"""All terminal rendering lives in this package, one module per kind of output.

Modules: `diagnostics` (manifest errors and warnings: text, JSON, GitHub annotations), `plans`
(plan text, markdown, JSON), `status` (the status table). Everything user-supplied is escaped
before rich renders it.
"""
