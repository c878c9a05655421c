"""From found cases to written text: the interface and what a generator returns (protocol), the prompts,
one module per generator (extractive, with its counting in commonality; openai; sagemaker), the deadline
and fallback every call goes through (deadline), the configured choice (factory), and the two answers
built on them: a query's (answering) and a follow-up question's (followup).
"""
