module github.com/dumpcatcher/dumpcatcher/test/tools/pause

go 1.24
