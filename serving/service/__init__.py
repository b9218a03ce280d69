"""The online service: routes and schemas (`app`), micro-batched serving (`service`,
`batcher`), the versions it holds (`versions`), retrieval (`retriever`, `encoder`,
`encoder_state`), the load check a version passes before a pointer names it (`checks`) and the
`pinrec-serve` command (`cli`)."""
