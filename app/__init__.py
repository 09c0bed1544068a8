"""coopsync: the store integration service of a producer cooperative."""
