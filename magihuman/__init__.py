"""magihuman: daVinci-MagiHuman reimplemented, with a research and benchmark harness."""
