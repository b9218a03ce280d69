"""Operations area: freshness checks on what serving reads (the champion, the online store) and
a sensor that reports failed runs."""
