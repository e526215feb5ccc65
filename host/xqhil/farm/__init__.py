"""Board farm: labgrid places as boards (``labgrid://``) and a scheduler that runs a model x board matrix.

``coordinator`` talks to a labgrid coordinator (acquire, release, reserve, tags); ``provider`` turns an
acquired place into the same ``BoardSpec`` the ssh transport takes; ``scheduler`` runs the matrix."""
