{
  "targets": [
    {
      "target_name": "seek_hole",
      "sources": ["seekHole.c"]
    }
  ]
}
