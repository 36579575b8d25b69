"""One pump per sink: claim what is due, send it, settle it; and how healthy each sink is."""
