{
  "targets": [
    {
      "target_name": "seek_hole",
      "sources": ["seekHole.c"]
    },
    {
      "target_name": "send_file",
      "sources": ["sendFile.c"]
    },
    {
      "target_name": "fast_exit",
      "sources": ["fastExit.c"]
    }
  ]
}
