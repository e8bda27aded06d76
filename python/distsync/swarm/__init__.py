"""``Storage = "S3+BitTorrent"``: the fleet's servers as a BitTorrent swarm (docs/bittorrent.md).

- ``meta``: the torrent over an artifact's ciphertext, hashed while it uploads (pure; all the
  uploader needs, no libtorrent)
- ``plan``: who reads which pieces from the store, who helps whom, when to add the web seed
  (pure: data and the time in, decisions out)
- ``peerbook``: the sealed peer records in the bucket, read in bounded amounts
- ``settings``: the ``Torrent*`` configuration keys
- ``lt``: the optional libtorrent import, its session settings, its errors made ``SwarmError``
- ``session``: the libtorrent session, one per daemon; ``reader``: one node's share of the
  store reads; ``arriving``: the swarm's copy, read while it downloads
"""
