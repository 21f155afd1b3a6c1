from deer_reid_assets.cli import main

main()
