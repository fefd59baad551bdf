from twisted.application.service import ServiceMaker

moxtw = ServiceMaker("moxtw", "moxtw.tap", "mox-compatible mail daemon for applications", "moxtw")
